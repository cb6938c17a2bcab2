"""Data managers: locks, transfers, the host cache. No pyfuse3 import below this line."""

from .base import DataManager, Lock
from .embedded import EmbeddedDataManager

__all__ = ["DataManager", "EmbeddedDataManager", "Lock"]
