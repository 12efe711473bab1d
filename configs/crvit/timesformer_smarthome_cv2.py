# Stage 1 of the paper's CR-ViT recipe on Toyota Smarthome, protocol CV2 (19 classes): as the
# cross-subject config. Then run configs/crvit/crvit_smarthome_cv2.py.
_base_ = ["timesformer_smarthome_cs.py"]

protocol = "cv2"
work_dir = "work_dirs/timesformer_smarthome_cv2"
