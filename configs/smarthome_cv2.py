# CRT on Toyota Smarthome, cross-view protocol 2 (19 classes; train cameras 1,3,4,6,7, test 2).
_base_ = ["smarthome_cs.py"]

protocol = "cv2"
