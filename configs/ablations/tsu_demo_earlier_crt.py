# The demo with the earlier crt variant: one memory step per segment on the memory token's output,
# learned positions, and each frame's output plus the carried memory into the head.
_base_ = ["../tsu_demo.py"]

model = dict(memory_read="token", positions="learned", frame_read="output+memory")
