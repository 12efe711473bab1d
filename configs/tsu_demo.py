# Dense detection on a small generated TSU-like set (data/tsu_demo, made on first use): 2-3 minute
# videos whose class "Square_after_disk" needs the memory of a disk seen minutes before.
_base_ = ["tsu_cs.py"]

data_root = "data/tsu_demo/mp4"
ann_file = "data/tsu_demo/annotations.json"
class_file = "data/tsu_demo/Action_list"
# demo.seed draws the videos (kept on disk: a new seed needs a new data_root); seed trains.
demo = dict(seed=0, num_videos=72, min_seconds=120.0, max_seconds=180.0)
encoder = dict(name="vit_tiny_patch16_224", pretrained=False, kwargs=dict(img_size=32))
# A disk comes up to 40 segments (160 s) before its squares. An update-gate bias of 4 starts the
# memory keeping 98% of itself per segment (a time scale of 1 + e^4 = 56 segments, a video's
# length); torch's init keeps about 50%, and the disk is forgotten within a few segments.
# frame_read 'output+memory': the frames read the memory straight, not only through attention
# to its token.
model = dict(
    d_model=128,
    depth=1,
    segment_len=16,
    memory_read="token",
    positions="learned",
    truncate_every=None,
    memory_gate_bias=4.0,
    frame_read="output+memory",
)
dense = dict(window=None, gt_stride=1)
train = dict(epochs=40, batch_size=2, lr=1e-3, warmup_epochs=2)
