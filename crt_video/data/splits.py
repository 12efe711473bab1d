"""The split names every dataset and protocol uses, in the order they are made and reported."""

SPLITS = ("train", "val", "test")
