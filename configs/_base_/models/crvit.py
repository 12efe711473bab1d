# CR-ViT (the paper's Smarthome model): the TimeSformer backbone reading a clip in two parts
# (8 + 8 frames), a memory token in its time attention and the classifier on [prev_cls, cls].
# Its keys are documented in timesformer.py; every crvit config trains on the last iteration's
# loss (loss_iterations='last'), and evaluation always reads the last iteration.
_base_ = ["timesformer.py"]

model = dict(type="crvit")
