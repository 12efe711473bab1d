"""Installed package versions, read from their metadata without importing them."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version


def package_version(package: str) -> str | None:
    """The installed version of ``package`` (None when it is not installed)."""
    try:
        return version(package)
    except PackageNotFoundError:
        return None
