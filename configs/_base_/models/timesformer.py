# TimeSformer (Bertasius et al., ICML 2021): divided space-time attention at the ViT-B/16 shape,
# trained end to end on decoded frames (model.task='video'), as the paper's stage 1.
model = dict(
    task="video",
    type="timesformer",  # or 'crvit' (_base_/models/crvit.py)
    img_size=224,
    patch_size=16,
    num_frames=16,  # frames per clip; must equal frame_clips.num_frames
    embed_dim=768,
    depth=12,
    num_heads=12,
    mlp_ratio=4.0,
    qkv_bias=True,
    drop_rate=0.0,
    attn_drop_rate=0.0,
    drop_path_rate=0.1,
    grad_checkpointing=False,  # recompute each block in the backward pass: less memory, ~30% slower
    # Kinetics-400 weights: a local file, either the official TimeSformer_divST_8x32_224_K400.pyth
    # (facebookresearch/TimeSformer) or a Hugging Face facebook/timesformer-base-finetuned-k400
    # folder; True downloads the latter; False starts from random weights
    pretrained=True,
    # CR-ViT only (type='crvit'): the clip read in `iterations` equal parts with a recurrent memory
    iterations=2,
    memory_cell="gru",  # 'gru' or 'ncgru'
    # how the memory enters time attention: as a memory token the layers update, a query too, its
    # per-position copies averaged back after each block's time attention ('token', the paper's
    # token; on the demo as accurate as 'key_value', docs/benchmarks.md), as an extra key/value
    # token per position ('key_value', before 0.6), or added to every token's time-attention
    # input ('token_add'); where the paper is silent, the memory RNN steps over each frame's mean
    # patch output ('frame_mean') or reads the mean of all the part's patch outputs in one step
    # ('token_mean')
    memory_slot="token",
    memory_input="frame_mean",
    # the paper's: iteration 2's class token starts from iteration 1's output and the classifier
    # reads [prev_cls, cls]; False (an ablation) leaves the memory the only path between them
    carry_cls=True,
    # the training loss: the cross-entropy of the last iteration's logits ('last'), or the mean of
    # every iteration's, each against the clip's label ('all'); evaluation reads the last one
    loss_iterations="last",
)
