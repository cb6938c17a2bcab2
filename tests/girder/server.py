"""A real Girder 5 server on loopback with an in-memory database (mongomock), for tests.

No MongoDB server is packaged here, so before Girder is imported ``pymongo.MongoClient`` becomes
``mongomock.MongoClient``, with the adaptations DESIGN.md lists. Run as
``python -m tests.girder.server PORT``; it serves ``girder.asgi:app`` with uvicorn in this process.
"""

from __future__ import annotations

import sys
import warnings


def patch_mongomock() -> None:
    import mongomock
    import mongomock.codec_options as codec_options
    import pymongo

    original = codec_options.is_supported

    def is_supported(options: object) -> object:
        # Girder asks for CodecOptions(tz_aware=True, tzinfo=utc); mongomock refuses a tzinfo.
        if options is not None and getattr(options, "tzinfo", None) is not None:
            options = options.with_options(tzinfo=None)  # type: ignore[attr-defined]
        return original(options)

    codec_options.is_supported = is_supported

    def count(self: mongomock.collection.Cursor, with_limit_and_skip: bool = False) -> int:
        return len(self._compute_results(with_limit_and_skip))  # type: ignore[attr-defined]

    mongomock.collection.Cursor.count = count  # Girder calls Cursor.count(), gone from mongomock for pymongo 4
    _index_ids(mongomock)
    pymongo.MongoClient = mongomock.MongoClient  # type: ignore[misc]

    import girder.api.rest as rest

    rest._MONGO_CURSOR_TYPES = (*rest._MONGO_CURSOR_TYPES, mongomock.collection.Cursor)

    from girder_worker.app import app

    app.conf.task_always_eager = True  # folder deletion and imports run inline


def _index_ids(mongomock: object) -> None:
    """A lookup by ``_id`` reads that one document, as MongoDB's ``_id`` index does; mongomock
    scans the whole collection for it, which made a bench of thousands of items measure the mock
    (its cost grew with the square of the item count) rather than Girder."""
    from mongomock.collection import Collection
    from mongomock.filtering import filter_applies

    scan = Collection._iter_documents

    def iter_documents(self: Collection, spec: object) -> object:
        key = spec.get("_id") if isinstance(spec, dict) else None
        if key is None or isinstance(key, dict | list):
            return scan(self, spec)
        try:
            found = self._store[key]
        except (KeyError, TypeError):
            return iter(())
        return iter([found] if filter_applies(spec, found) else [])

    Collection._iter_documents = iter_documents  # type: ignore[method-assign]


class StubImageBuilder:
    """Version manifests ask Docker's image builder for the image tag; no Docker here. The
    plugin's own tests stub it the same way."""

    class container_config:
        repo2docker_version = "stub"

    def __init__(self, *args: object, **kwargs: object) -> None:
        pass

    def get_tag(self) -> str:
        return "registry.local/wtfs/stub:0"


def patch_wholetale(port: int) -> None:
    try:
        import cherrypy
        import girder_wholetale.lib.manifest as manifest
    except ImportError:
        return
    manifest.ImageBuilder = StubImageBuilder  # type: ignore[assignment,misc]
    cherrypy.config["server.socket_port"] = port  # version creation calls this server itself


def main(port: int) -> None:
    warnings.simplefilter("ignore")
    patch_mongomock()
    import uvicorn
    from girder.asgi import app

    patch_wholetale(port)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main(int(sys.argv[1]))
