"""Providers: fetch one object into a temp file. The scheme of its source picks one."""

from __future__ import annotations

from urllib.parse import urlsplit

from ..errors import TransferFailed
from ..objects import ObjectRef
from .base import Provider, Sink
from .http import HttpProvider
from .local import LocalProvider


class Providers:
    """Scheme → provider. Later providers (girder, globus) register here."""

    def __init__(self, by_scheme: dict[str, Provider]) -> None:
        self.by_scheme = by_scheme

    def in_place(self, obj: ObjectRef) -> LocalProvider | None:
        """The provider that serves ``obj`` from its source, without a copy: a local file with no
        spec sha256 to verify first. None: it lands in the cache."""
        provider = self.by_scheme.get(urlsplit(obj.source).scheme.lower())
        return provider if isinstance(provider, LocalProvider) and obj.sha256 is None else None

    def for_object(self, obj: ObjectRef) -> Provider:
        scheme = urlsplit(obj.source).scheme.lower()
        provider = self.by_scheme.get(scheme)
        if provider is None:
            raise TransferFailed(f"{obj.source}: no provider for scheme {scheme!r}")
        return provider


def default_providers(http: HttpProvider) -> Providers:
    local = LocalProvider()
    return Providers({"http": http, "https": http, "file": local, "local": local, "": local})


__all__ = ["HttpProvider", "LocalProvider", "Provider", "Providers", "Sink", "default_providers"]
