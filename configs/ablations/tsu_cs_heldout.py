# configs/tsu_cs.py as a new user runs it on a small machine: its own defaults, with only a small
# encoder, 2 frames/s and 8-frame segments set, on a generated TSU-format set the demo's settings
# were never tuned on (demo seed 1, made on first use in data/tsu_heldout/). One class there,
# Square_after_disk, needs a disk seen 15-60 s earlier.
_base_ = ["../tsu_cs.py"]

data_root = "data/tsu_heldout/mp4"
ann_file = "data/tsu_heldout/annotations.json"
class_file = "data/tsu_heldout/Action_list"
demo = dict(seed=1, num_videos=72, min_seconds=120.0, max_seconds=180.0)
encoder = dict(name="vit_tiny_patch16_224", pretrained=False, kwargs=dict(img_size=32))
sampling = dict(fps=2.0)
model = dict(segment_len=8)
