# Stage 1 of the paper's CR-ViT recipe on Toyota Smarthome, protocol CV1 (19 classes): as the
# cross-subject config. Then run configs/crvit/crvit_smarthome_cv1.py.
_base_ = ["timesformer_smarthome_cs.py"]

protocol = "cv1"
work_dir = "work_dirs/timesformer_smarthome_cv1"
