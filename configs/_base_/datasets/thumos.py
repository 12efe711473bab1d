# THUMOS'14 online action detection on the features LSTR and TeSTra distribute, in their layout
# under data_root: rgb_kinetics_resnet50/, flow_kinetics_bninception/ and target_perframe/
# (one <session>.npy each, 4 rows per second) and data_info.json. The toolkit never downloads them.
data_root = "data/thumos"
protocol = "thumos14"  # train on the 200 validation sessions, test on the 213 test sessions
val_mode = "none"  # or 'holdout': every 10th training session validates (best epoch by its mAP)
features = dict(
    type="npy", dir=None, streams=["rgb_kinetics_resnet50", "flow_kinetics_bninception"]
)
sampling = dict(fps=4.0, max_frames=None)  # the features' rate: 24 fps video, 6 frames per row
demo = None  # None: the real features under data_root; a dict: the demo (configs/thumos_demo.py)
model = dict(task="online")  # one softmax over the classes per feature row
dense = dict(window=256)  # rows drawn per training session and epoch (64 s); None: all
