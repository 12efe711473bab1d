"""Exceptions for bad input. Each message is one line naming the file or value and the fix."""


class CrtVideoError(Exception):
    """Base class: the command-line tools print these as one line and exit non-zero."""


class ClipNameError(CrtVideoError):
    """A file name that does not follow <Activity>_pPP_rRR_vVV_cCC.mp4."""


class VideoDecodeError(CrtVideoError):
    """A video that cannot be opened or has no decodable frames."""


class ConfigError(CrtVideoError):
    """A config file, key or value that is wrong."""


class FeatureMismatchError(CrtVideoError):
    """Cached features produced by a different encoder or sampling setup."""


class CheckpointError(CrtVideoError):
    """A checkpoint that is missing, corrupt, or from another encoder or class list."""


class DatasetError(CrtVideoError):
    """A missing or empty dataset folder or split."""


class ServerError(CrtVideoError):
    """A model server (Triton) that cannot be reached, lacks a model or fails a request."""
