# Dense activity detection with CRT on Toyota Smarthome Untrimmed, cross-subject (51 classes).
# Put the TSU .mp4 videos in data/tsu/mp4/ and smarthome_CS_51.json in data/tsu/.
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/crt.py",
    "_base_/datasets/tsu.py",
    "_base_/schedules/adamw_cosine.py",
]

ann_file = "data/tsu/smarthome_CS_51.json"
protocol = "cs"
model = dict(truncate_every=16)
train = dict(batch_size=8)
