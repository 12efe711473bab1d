# Dense activity detection with CRT on Toyota Smarthome Untrimmed, cross-view (51 classes).
_base_ = ["tsu_cs.py"]

ann_file = "data/tsu/smarthome_CV_51.json"
protocol = "cv"
