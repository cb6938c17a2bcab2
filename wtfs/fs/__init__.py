"""The filesystem: a FUSE-free core (``core``) and the thin pyfuse3 adapter over it."""

from .core import FsCore, Presentation

__all__ = ["FsCore", "Presentation"]
