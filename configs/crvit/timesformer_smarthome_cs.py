# Stage 1 of the paper's CR-ViT recipe on Toyota Smarthome, protocol CS: TimeSformer fine-tuned
# end to end from its Kinetics-400 weights for 15 epochs (the pi-ViT recipe without its pose
# modules). Then run configs/crvit/crvit_smarthome_cs.py, which starts from this run's best.pth.
_base_ = [
    "../_base_/default_runtime.py",
    "../_base_/models/timesformer.py",
    "../_base_/datasets/smarthome_frames.py",
    "../_base_/schedules/timesformer_sgd.py",
]

data_root = "data/smarthome/mp4"
protocol = "cs"
work_dir = "work_dirs/timesformer_smarthome_cs"
# the official Kinetics-400 checkpoint (facebookresearch/TimeSformer); True downloads Hugging
# Face's facebook/timesformer-base-finetuned-k400 instead
model = dict(pretrained="checkpoints/TimeSformer_divST_8x32_224_K400.pyth")
