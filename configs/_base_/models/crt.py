# A frozen timm image encoder turns every sampled frame into a feature vector (cached on disk);
# the CRT head classifies the clip from that feature sequence.
encoder = dict(
    name="vit_small_patch16_224",
    pretrained=True,  # True: timm's weights, False: random init, or a path to a weights file
    kwargs=dict(),  # extra timm.create_model arguments, e.g. dict(img_size=112)
    batch_size="auto",  # frames per encoder forward pass: a count, or "auto" (8 on CPU, 64 on GPU)
    seed=0,  # initialises the encoder when pretrained=False
    num_workers="auto",  # video decoding processes: a count, or "auto" (up to 2 on CPU, 8 on GPU)
    precision="auto",  # 'auto' (bf16 on GPU; on CPU the fastest of fp32/bf16/int8, measured), 'fp32', 'bf16', 'int8'
)
model = dict(
    type="crt",  # 'crt', 'xl' (Transformer-XL), 'gru', 'segment' (no memory), 'full', 'meanpool'
    segment_len=16,  # frames per segment
    d_model=256,
    depth=2,  # Transformer layers per segment
    heads=4,
    dropout=0.1,
    memory_cell="gru",  # 'gru' or 'ncgru'
    # 'sequence' (the paper's): the memory RNN runs over the segment's outputs in order, from the
    # previous memory; ablations: one cell step on the memory token's output ('token') or the mean
    memory_read="sequence",
    memory_init="learned",  # crt's first memory m_0: a learned vector ('learned') or zeros ('zero')
    # crt's positions inside a segment default to 'recurrent' (the paper's position RNN; or
    # 'learned', 'rotary'); it is not set here because `segment` (default 'learned', the same
    # choices) and `full` ('sinusoidal', 'rotary', 'recurrent') read the same key
    position_cell=None,  # the position RNN's cell; None: crt's memory_cell, else a GRU
    position_dim=None,  # the position RNN's state size (at most d_model); None: d_model
    # crt's clip head defaults to 'memory' (the final memory; or 'memory+mean', 'mean'); it is
    # not set here because `xl` reads the same key ('mean' or 'last')
    truncate_every=None,  # cut gradients every k segments; None: backpropagate through the clip
    # where the memory's update gates start, crt and gru: memory_gate_bias=b puts every unit at
    # one time scale of 1 + e^b steps (4: 56 steps); with memory_gate_bias=None, memory_horizon=s
    # spreads the units' time scales log-uniformly from 2 steps to s seconds (sampling.fps
    # converts them to steps). With both None, torch's init halves the memory at every step.
    memory_horizon=None,
    memory_gate_bias=4.0,
    # per-frame crt (TSU, THUMOS'14): what each frame's head reads: 'output+hidden' (its output
    # and the memory RNN's state after it), 'output', 'output+memory' or 'hidden'
    frame_read="output+hidden",
    embed_norm=False,  # LayerNorm the projected frames before adding positions (docs/benchmarks.md, the recipe of full)
    pool="mean",  # full only: read out the mean of the frame outputs ('mean') or a class token
)
