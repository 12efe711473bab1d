# TimeSformer's fine-tuning recipe as pi-ViT runs it on Smarthome (dominickrei/pi-vit,
# configs/Smarthome/PIViT_Smarthome.yaml: SGD, base lr 0.005, momentum 0.9, weight decay 1e-4,
# 15 epochs with the rate 10x lower from epoch 11 and 100x from 14, 64 clips per step over 8
# GPUs). The CRT paper gives none of these values.
_base_ = ["adamw_cosine.py"]

train = dict(
    epochs=15,
    batch_size=8,  # clips per step and GPU: 64 over 8 GPUs, as pi-ViT
    lr=0.005,
    weight_decay=1e-4,
    warmup_epochs=0,
    grad_clip=None,
    balanced_sampling=True,
    crop_ratio=None,  # unused: the video task samples its frames itself
    num_workers=8,  # decoding processes per GPU
    amp=True,
    optimizer="sgd",
    momentum=0.9,
    lr_steps=(11, 14),
)
