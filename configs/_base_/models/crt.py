# A frozen timm image encoder turns every sampled frame into a feature vector (cached on disk);
# the CRT head classifies the clip from that feature sequence.
encoder = dict(
    name="vit_small_patch16_224",
    pretrained=True,  # True: timm's weights, False: random init, or a path to a weights file
    kwargs=dict(),  # extra timm.create_model arguments, e.g. dict(img_size=112)
    batch_size=64,  # frames per encoder forward pass during extraction
    seed=0,  # initialises the encoder when pretrained=False
    num_workers="auto",  # video decoding processes: a count, or "auto" (up to 2 on CPU, 8 on GPU)
    precision="auto",  # 'auto' (bf16 where the hardware has native bf16, else fp32), 'fp32', 'bf16'
)
model = dict(
    type="crt",  # 'crt', 'segment' (no memory), 'full' (full-length Transformer), 'meanpool'
    segment_len=16,  # frames per segment
    d_model=256,
    depth=2,  # Transformer layers per segment
    heads=4,
    dropout=0.1,
    memory_cell="gru",  # 'gru' or 'ncgru'
    memory_read="token",  # the RNN reads the memory token's output ('token') or the segment mean
    head="memory",  # classify from the final memory ('memory') or memory + mean of frame outputs
    truncate_every=None,  # cut gradients every k segments; None: backpropagate through the clip
    memory_gate_bias=None,  # initial update-gate bias (e.g. 2: keep 88% per segment); None: torch's init
    frame_memory=False,  # dense crt: also feed the carried memory straight to each frame's head
    embed_norm=False,  # LayerNorm the projected frames before adding positions (see the README)
    pool="mean",  # full only: read out the mean of the frame outputs ('mean') or a class token
)
