# A tiny CR-ViT trained end to end on decoded frames of a demo set, on a CPU in minutes. Its
# classes are the order of two events, one in each half of the clip: iteration 1 reads the first
# half and iteration 2 the second, so telling "disk then square" from "square then disk" needs
# what iteration 1 saw. Random initial weights (no Kinetics-400 file needed).
_base_ = [
    "_base_/default_runtime.py",
    "_base_/models/crvit.py",
    "_base_/datasets/smarthome_frames.py",
    "_base_/schedules/adamw_cosine.py",
]

data_root = "data/demo_crvit"
demo = dict(seed=0, num_clips=240, min_seconds=4.0, max_seconds=8.0, separate_parts=True)
model = dict(
    img_size=64, patch_size=8, embed_dim=96, depth=2, num_heads=2, drop_path_rate=0.0,
    pretrained=False,
)  # fmt: skip
frame_clips = dict(input_size=64, train_scale=(64, 72), test_crops=1, test_scale=64)
train = dict(epochs=30, batch_size=16, lr=1e-3, warmup_epochs=2, num_workers=1, crop_ratio=None)
