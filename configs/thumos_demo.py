# Online detection on a small generated set in THUMOS'14's layout (data/thumos_demo, made on first
# use): an action's class was said by a cue 2-8 s before it, so only a model with memory tells
# the two classes apart.
_base_ = ["thumos_oad.py"]

data_root = "data/thumos_demo"
demo = dict(seed=0, num_train=60, num_test=20, rows=240)
val_mode = "holdout"
model = dict(d_model=64, depth=1, heads=4, segment_len=16)
dense = dict(window=None)
train = dict(epochs=40, batch_size=4, lr=2e-3, warmup_epochs=2)
