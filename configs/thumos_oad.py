# Online action detection with CRT on THUMOS'14 (LSTR/TeSTra features: 3072 numbers per row, 22
# classes), scored by per-frame mAP as LSTR computes it. Put the features in data/thumos/.
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/crt.py",
    "_base_/datasets/thumos.py",
    "_base_/schedules/adamw_cosine.py",
]

# Each frame reads its output plus the memory RNN's state after it (the paper's memory, per
# frame): on the demo, the plain output read left the cue unread (per-frame mAP 0.53 against 1.0).
model = dict(frame_read="output+hidden")
train = dict(batch_size=16, lr=1e-3, epochs=30)
