"""``wtfs publish``: a file or tree into Girder folders, structure kept, sha256 on every item,
restartable from its journal after any crash (see ``command`` for the entry point)."""
