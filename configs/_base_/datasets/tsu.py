# Toyota Smarthome Untrimmed (TSU): long videos named P<subject>T<take>C<camera>.mp4 and the
# dataset's annotation JSON (smarthome_CS_51.json / smarthome_CV_51.json). The videos are
# available on request from the dataset's INRIA project page; the toolkit never downloads them.
data_root = "data/tsu/mp4"  # the folder holding the .mp4 videos
ann_file = "data/tsu/smarthome_CS_51.json"
class_file = None  # None: the 51 TSU activities; else an index<TAB>name file (Action_list)
protocol = "cs"  # 'cs' (split by subject) or 'cv' (split by camera)
val_mode = "subjects"  # hold out the training videos of subjects 19 and 25, or 'none'
sampling = dict(fps=4.0, max_frames=None)
demo = None  # None: real videos under data_root; a dict: the TSU demo (configs/tsu_demo.py)
model = dict(task="dense")  # per-frame multi-label logits
dense = dict(
    window=1024,  # training frames drawn per video per epoch; None: the whole video
    gt_stride=16,  # ground truth scored every gt_stride annotation frames (the I3D resolution)
    event_threshold=0.5,  # an event is a run of frames whose class score exceeds this
    min_event_frames=2,  # shortest event kept, in feature frames
    plot_videos=4,  # test videos drawn in test/activity_bars.png
)
