# Dense detection on a small generated TSU-like set (data/tsu_demo, made on first use): 2-3 minute
# videos whose class "Square_after_disk" needs the memory of a disk seen minutes before.
_base_ = ["tsu_cs.py"]

data_root = "data/tsu_demo/mp4"
ann_file = "data/tsu_demo/annotations.json"
class_file = "data/tsu_demo/Action_list"
# demo.seed draws the videos (kept on disk: a new seed needs a new data_root); seed trains.
demo = dict(seed=0, num_videos=72, min_seconds=120.0, max_seconds=180.0)
encoder = dict(name="vit_tiny_patch16_224", pretrained=False, kwargs=dict(img_size=32))
# The paper's crt with the base's memory settings (update-gate bias 4, no truncation); whole
# videos of 480-720 frames, so no training window.
# A position RNN of 32 numbers: the demo's table (docs/benchmarks.md) was measured with it.
model = dict(d_model=128, depth=1, segment_len=16, position_dim=32)
dense = dict(window=None, gt_stride=1)
train = dict(epochs=40, batch_size=2, lr=1e-3, warmup_epochs=2)
