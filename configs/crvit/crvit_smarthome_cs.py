# Stage 2 of the paper's CR-ViT recipe on Toyota Smarthome, protocol CS: the CR-ViT changes
# (two iterations of 8 frames, the memory token, the [prev_cls, cls] head) added to stage 1's
# TimeSformer (configs/crvit/timesformer_smarthome_cs.py), 40 epochs. The paper gives the epochs
# only: the optimizer is stage 1's, with its rate drops moved to the same fractions of 40 epochs.
_base_ = [
    "../_base_/default_runtime.py",
    "../_base_/models/crvit.py",
    "../_base_/datasets/smarthome_frames.py",
    "../_base_/schedules/timesformer_sgd.py",
]

data_root = "data/smarthome/mp4"
protocol = "cs"
work_dir = "work_dirs/crvit_smarthome_cs"
model = dict(pretrained=False)  # the backbone comes from stage 1 through train.load_from
train = dict(
    epochs=40,
    lr_steps=(29, 37),
    load_from="work_dirs/timesformer_smarthome_cs/best.pth",
)
