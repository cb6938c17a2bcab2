"""The FUSE layer: thin, one errno boundary."""

from .operations import Operations, Presentation

__all__ = ["Operations", "Presentation"]
