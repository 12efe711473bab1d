# CR-ViT (the paper's Smarthome model): the TimeSformer backbone reading a clip in two parts
# (8 + 8 frames), a memory token in its time attention and the classifier on [prev_cls, cls].
_base_ = ["timesformer.py"]

model = dict(type="crvit")
