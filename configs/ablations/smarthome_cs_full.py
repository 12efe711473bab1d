# Ablation: a full-length Transformer over all frames of the clip (same depth and width as CRT).
_base_ = ["../smarthome_cs.py"]

model = dict(type="full")
