# The built-in demo dataset: small synthetic clips that the pipeline generates under data_root
# the first time a run needs them, so everything runs without the real dataset.
_base_ = ["smarthome.py"]

data_root = "data/demo"
demo = dict(seed=0, num_clips=None)  # passed to make_demo_dataset; num_clips=None: default size
