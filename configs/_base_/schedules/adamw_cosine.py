# AdamW with linear warm-up then cosine decay, per step.
train = dict(
    epochs=30,
    batch_size=32,  # clips per step
    lr=5e-4,
    weight_decay=0.05,
    warmup_epochs=2,
    grad_clip=1.0,  # max gradient norm; None disables clipping
    balanced_sampling=True,  # draw clips inversely to class frequency (Smarthome is imbalanced)
    crop_ratio=(0.8, 1.0),  # random temporal crop keeping this fraction of the clip
    num_workers=0,  # feature loading processes (features are small; 0 is usually fastest)
    amp=True,  # bf16 autocast on CUDA
    load_from=None,  # a checkpoint whose weights start training (weights only, from epoch 1)
    optimizer="adamw",  # or 'sgd' (with momentum)
    momentum=0.9,  # sgd only
    lr_steps=None,  # None: cosine decay; else epochs at which the rate drops 10x, e.g. (11, 14)
)
