# Ablation: the floor, mean-pooled frame features and a linear classifier.
_base_ = ["../smarthome_cs.py"]

model = dict(type="meanpool")
