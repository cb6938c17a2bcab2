"""What the data tree is: spec entries, local directories, (later) Girder folders and items."""

from .build import build_catalog
from .nodes import CatalogDir, CatalogFile, CatalogLink, CatalogNode, StaticDir

__all__ = ["CatalogDir", "CatalogFile", "CatalogLink", "CatalogNode", "StaticDir", "build_catalog"]
