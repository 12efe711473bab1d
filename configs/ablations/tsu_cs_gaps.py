# configs/tsu_cs.py as a new user runs it on a small machine, on a set that measures how long the
# memory holds: its own defaults, with only a small encoder, 2 frames/s and 8-frame segments set.
# The set (data/tsu_gaps/, made on first use by its own generator, not the TSU demo's) labels
# each square Drink.From_glass when a cue (Take_pills) came earlier in the video, Drink.From_cup
# otherwise, at gaps spread log-uniformly from 10 s to 6 minutes after the cue; labels from the
# 51 TSU classes. `python tools/benchmark.py memory` reports its AP per gap.
_base_ = ["../tsu_cs.py"]

data_root = "data/tsu_gaps/mp4"
ann_file = "data/tsu_gaps/annotations.json"
class_file = None  # the 51 TSU activities
demo = dict(type="gap_sweep", seed=0, num_videos=96, min_gap_seconds=10.0, max_gap_seconds=360.0)
encoder = dict(name="vit_tiny_patch16_224", pretrained=False, kwargs=dict(img_size=64))
sampling = dict(fps=2.0)
model = dict(segment_len=8)
