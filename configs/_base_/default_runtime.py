# Where a run writes, how it is seeded and where it runs. Every config inherits this file.
work_dir = None  # None: work_dirs/<config file name>/
cache_dir = "work_dirs/cache"  # extracted features, shared by configs with equal encoder+sampling
seed = 0
device = "auto"  # 'auto' (CUDA when available, else CPU), 'cpu', 'cuda' or 'cuda:N'
dist_timeout_minutes = 60  # torchrun: how long a rank may wait for the others in one step
# Features: extracted from the videos by the encoder (cached), or the dataset's pre-extracted
# .npy files: features = dict(type="npy", dir=DIR, streams=None or [subfolders to concatenate]).
features = dict(type="extract", dir=None, streams=None)
