"""Views: the trees of the mount as nodes, independent of FUSE."""

from .base import Attr, Caller, Node, OpenFile, SetAttr
from .data import DataContext, DataDir
from .root import StaticDirNode

__all__ = ["Attr", "Caller", "DataContext", "DataDir", "Node", "OpenFile", "SetAttr", "StaticDirNode"]
