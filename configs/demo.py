# A small end-to-end run on the built-in demo dataset (generated under data/demo on first use).
# The encoder has random weights (pretrained=False) so the demo runs offline; accuracy comes from
# the CRT head learning the synthetic motion patterns, not from ImageNet features.
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/crt.py",
    "_base_/datasets/demo.py",
    "_base_/schedules/adamw_cosine.py",
]

sampling = dict(fps=4.0)
encoder = dict(name="vit_tiny_patch16_224", pretrained=False, kwargs=dict(img_size=64))
model = dict(d_model=128, depth=1, segment_len=8)
train = dict(epochs=30, batch_size=16)
