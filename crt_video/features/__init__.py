"""mp4 -> per-frame features: decoding and sampling (video), the frozen timm image model
(frame_encoder, precision), extraction (extract) and the on-disk feature store (store)."""
