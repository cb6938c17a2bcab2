"""``wtfs publish``'s arguments, apart from the command so that building the CLI's parser
imports neither trio nor httpx (``wtfs publish`` should start as fast as ``girder-client``)."""

from __future__ import annotations

import argparse

#: Girder's own client sends 64 MiB chunks; so do we (fewer calls, one buffer per job in memory).
CHUNK_SIZE = 64 * 1024**2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", metavar="PATH", help="file or directory to publish")
    dest = parser.add_mutually_exclusive_group(required=True)
    dest.add_argument("--folder-id", help="publish into this Girder folder")
    dest.add_argument("--collection", help="publish into this collection (created if missing)")
    parser.add_argument("--folder-path", help="A/B/C below --collection (created if missing)")
    parser.add_argument("--girder-url", help="Girder API URL (default: the mount's [girder] or [wholetale])")
    key = parser.add_mutually_exclusive_group()
    key.add_argument("--api-key-env", metavar="VAR", help="environment variable holding the API key")
    key.add_argument("--api-key-file", metavar="FILE", help="file holding the API key")
    parser.add_argument("--jobs", type=_positive, default=4, help="parallel uploads (default 4)")
    parser.add_argument("--json", action="store_true", help="JSON heartbeat lines instead of a progress bar")
    parser.add_argument("--no-overwrite", action="store_true", help="report items that hold other contents")
    parser.add_argument("--chunk-size", type=_positive, default=CHUNK_SIZE, help=argparse.SUPPRESS)
    parser.add_argument("--heartbeat", type=float, default=5.0, help=argparse.SUPPRESS)


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value
