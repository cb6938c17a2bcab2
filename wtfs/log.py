"""Logging: plain lines on stderr, or ``<N>``-prefixed priorities under journald.

Every line goes through ``mask_credentials``: a URL's ``user:password@`` never reaches a log,
and a log file the daemon writes to is made private to its user.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sys

_JOURNAL_PRIORITY = {
    logging.CRITICAL: 2,
    logging.ERROR: 3,
    logging.WARNING: 4,
    logging.INFO: 6,
    logging.DEBUG: 7,
}

#: The userinfo of a URL (``scheme://user:password@host``): everything between ``//`` and ``@``
#: that holds no ``/``, whitespace or quote, so a path's ``@`` is left alone.
_USERINFO = re.compile(r"(?<=://)[^/@\s\"'<>]+@")
MASK = "***@"
LOG_FILE_MODE = 0o600


def mask_credentials(text: str) -> str:
    """``https://user:secret@host/x`` -> ``https://***@host/x`` (a token as user name too)."""
    return _USERINFO.sub(MASK, text)


class MaskingFormatter(logging.Formatter):
    """Formats as usual, then masks credentials in the whole text (message and traceback)."""

    def format(self, record: logging.LogRecord) -> str:
        return mask_credentials(super().format(record))


class JournalFormatter(MaskingFormatter):
    """journald reads a leading ``<N>`` on each stderr line as the syslog priority."""

    def format(self, record: logging.LogRecord) -> str:
        priority = _JOURNAL_PRIORITY.get(record.levelno, 6)
        text = super().format(record)
        return "\n".join(f"<{priority}>{line}" for line in text.splitlines())


def to_journal(fd: int) -> bool:
    """Is ``fd`` the stream systemd connected to the journal? ``JOURNAL_STREAM`` names it by
    ``device:inode``; a daemon whose stderr was redirected (to a log file) inherits the variable
    but not the stream, and keeps plain lines."""
    try:
        device, inode = (int(part) for part in os.environ.get("JOURNAL_STREAM", "").split(":"))
        info = os.fstat(fd)
    except (ValueError, OSError):
        return False
    return (info.st_dev, info.st_ino) == (device, inode)


def setup_logging(debug: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if to_journal(sys.stderr.fileno()):  # journald adds the time; <N> gives each line its priority
        handler.setFormatter(JournalFormatter("%(name)s: %(message)s"))
    else:
        handler.setFormatter(MaskingFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    # Libraries' request logs would carry URLs with tokens at debug level: keep them quiet.
    for noisy in ("httpx", "httpcore", "pyfuse3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    _make_private(sys.stderr.fileno())


def _make_private(fd: int) -> None:
    """A log file (stderr redirected to one) holds sources and paths: owner-only. Said once, and
    only if it already held lines others could read (a fresh file is just made private)."""
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or not info.st_mode & 0o077:
            return
        os.fchmod(fd, stat.S_IMODE(info.st_mode) & LOG_FILE_MODE)
    except OSError:
        return
    if info.st_size:
        logging.getLogger(__name__).warning(
            "the log file was readable by other users (mode %o); made private", stat.S_IMODE(info.st_mode)
        )


def reopen_log(path: str) -> None:
    """After logrotate moved the log away (SIGHUP): write to a new file at ``path`` from now on.

    stdout and stderr are the log file in the background (the starter redirected them), so the
    new file takes their places and every handler follows."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, LOG_FILE_MODE)
    try:
        for target in (1, 2):
            os.dup2(fd, target)
    finally:
        os.close(fd)
