# Toyota Smarthome: one .mp4 per clip, named <Activity>_pPP_rRR_vVV_cCC.mp4. The clips are
# available on request from the dataset's INRIA project page; the toolkit never downloads them.
data_root = "data/smarthome/mp4"  # the folder holding the .mp4 clips (no subfolders needed)
protocol = "cs"  # 'cs' (31 classes, split by subject), 'cv1' or 'cv2' (19 classes, by camera)
val_mode = "subjects"  # CS validation: 'subjects' (19, 25), 'random5' (5% of train), 'none'
# Frames are sampled at a fixed rate over the whole clip; max_frames=None keeps every sample.
sampling = dict(fps=4.0, max_frames=None)
demo = None  # None: real clips under data_root; a dict: the demo dataset (datasets/demo.py)
