# Toyota Smarthome clips read as decoded frames (model.task='video'), with TimeSformer's
# augmentation and test views (facebookresearch/TimeSformer, configs/Kinetics/
# TimeSformer_divST_8x32_224.yaml and timesformer/datasets/kinetics.py).
_base_ = ["smarthome.py"]

frame_clips = dict(
    num_frames=16,  # frames per clip, one per equal span of it ('uniform')
    input_size=224,  # the square crop the model reads
    train_scale=(256, 320),  # training: short side drawn from this range, then a random crop
    test_scale=None,  # test: short side (None: input_size for 3 crops, train_scale[0] for 1)
    test_crops=3,  # 1 (centre) or 3 (left, centre, right) spatial crops per test clip
    test_clips=1,  # temporal clips per test video; the views' probabilities are averaged
    hflip=True,  # random horizontal flip in training
    mean=(0.45, 0.45, 0.45),
    std=(0.225, 0.225, 0.225),
    interpolation="bilinear",
    sampling="uniform",  # 'uniform' (TSN spans) or 'dense' (frame_stride apart, Kinetics')
    frame_stride=16,  # 'dense' only
)
