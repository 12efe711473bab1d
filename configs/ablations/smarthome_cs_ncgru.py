# Ablation: CRT with the orthogonal NC-GRU memory cell instead of a GRUCell.
_base_ = ["../smarthome_cs.py"]

model = dict(memory_cell="ncgru")
