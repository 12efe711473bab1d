# Online action detection with CRT on THUMOS'14 (LSTR/TeSTra features: 3072 numbers per row, 22
# classes), scored by per-frame mAP as LSTR computes it. Put the features in data/thumos/.
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/crt.py",
    "_base_/datasets/thumos.py",
    "_base_/schedules/adamw_cosine.py",
]

# Causal: each row's label is computed from the past and itself only, as LSTR, TeSTra and
# MiniROAD predict, so per-frame mAP compares like with like (latency 'frame').
model = dict(causal=True)
train = dict(batch_size=16, lr=1e-3, epochs=30)
