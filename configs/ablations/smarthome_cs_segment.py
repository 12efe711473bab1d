# Ablation: the same segment Transformer without the recurrent memory (segment outputs pooled).
_base_ = ["../smarthome_cs.py"]

model = dict(type="segment")
