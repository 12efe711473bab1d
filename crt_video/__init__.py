"""crt_video: Compact Recurrent Transformer for video action recognition on Toyota Smarthome."""

__version__ = "0.7.0"
