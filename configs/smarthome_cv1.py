# CRT on Toyota Smarthome, cross-view protocol 1 (19 classes; train camera 1, test camera 2).
_base_ = ["smarthome_cs.py"]

protocol = "cv1"
