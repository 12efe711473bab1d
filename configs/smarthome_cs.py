# CRT on Toyota Smarthome, cross-subject protocol (31 classes).
# Put the Toyota Smarthome .mp4 clips (on request from the dataset's INRIA project page) in
# data/smarthome/mp4/, or point data_root at the folder holding them.
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/crt.py",
    "_base_/datasets/smarthome.py",
    "_base_/schedules/adamw_cosine.py",
]

data_root = "data/smarthome/mp4"
protocol = "cs"
