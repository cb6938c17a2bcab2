"""wtfs: a FUSE filesystem for reproducible-research sessions."""

__version__ = "0.1.0"
