# Stage 2 of the paper's CR-ViT recipe on Toyota Smarthome, protocol CV1 (19 classes): as the
# cross-subject config, from configs/crvit/timesformer_smarthome_cv1.py's best.pth.
_base_ = ["crvit_smarthome_cs.py"]

protocol = "cv1"
work_dir = "work_dirs/crvit_smarthome_cv1"
train = dict(load_from="work_dirs/timesformer_smarthome_cv1/best.pth")
