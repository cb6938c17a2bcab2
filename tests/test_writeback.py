"""The WholeTale workspace's write-back journal where its copies meet the host cache (a copy
that was sent may be linked in as the landed copy): real journal, real host cache, no server
(the landing's link and commit are done as the provider does them)."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from wtfs.dm.cache import HostCache
from wtfs.errors import WtfsError
from wtfs.objects import ObjectRef
from wtfs.store.writeback import WriteBack


def _sent(journal: WriteBack, rel: str, data: bytes) -> Path:
    row = journal.start(rel, "", None)
    journal.copy_path(row).write_bytes(data)
    journal.closed(rel)
    return journal.copy_path(row)


def test_a_failed_journal_update_in_unshare_leaves_no_orphan_copy(tmp_path: Path) -> None:
    """A journal that refuses the row's new copy name (a real SQLite failure, by a trigger):
    the open fails, and the copy made for it must not stay behind in copies/."""
    journal = WriteBack(tmp_path / "ws")
    copy = _sent(journal, "a.txt", b"sent\n")
    os.link(copy, tmp_path / "cached")  # as the check's landing does
    db = sqlite3.connect(tmp_path / "ws" / "journal.sqlite")
    db.execute("CREATE TRIGGER refuse BEFORE UPDATE OF copy ON pending BEGIN SELECT RAISE(FAIL, 'full'); END")
    db.commit()
    db.close()
    with pytest.raises(WtfsError):
        journal.start("a.txt", "v1", None)
    assert os.listdir(journal.copies) == [copy.name]
    journal.close()


def test_a_crash_kept_copy_does_not_keep_the_cache_s_group_mode(tmp_path: Path) -> None:
    """The cache's commit gives the shared inode the cache's mode (0640 with a cache group); a
    crash before the journal forgets the row keeps the copy; once the cache evicts its name the
    copy is written again in place, group-readable: every file the daemon writes is 0600."""
    journal = WriteBack(tmp_path / "ws")
    copy = _sent(journal, "a.txt", b"sent\n")
    cache = HostCache(tmp_path / "cache", group=os.getgid())
    cache.prepare()
    obj = ObjectRef.for_source("ws:item1", 5, None, "v1")
    temp = cache.tmp / "d.1.x.part"
    os.link(copy, temp)
    fd = os.open(temp, os.O_RDWR)
    try:
        cache.commit(fd, temp, obj, None)
    finally:
        os.close(fd)
    cache.remove(obj.id)  # evicted
    again = journal.start("a.txt", "v1", None)
    mode = stat.S_IMODE(os.stat(journal.copy_path(again)).st_mode)
    assert mode == 0o600, oct(mode)
    journal.close()


def test_a_copy_no_row_names_is_removed_at_start(tmp_path: Path) -> None:
    """A daemon killed while it replaced a row's copy leaves a file no row names: the next
    start removes it and keeps the row's own copy."""
    journal = WriteBack(tmp_path / "ws")
    copy = _sent(journal, "a.txt", b"sent\n")
    (journal.copies / "0123456789abcdef").write_bytes(b"orphan")
    journal.reopened_all()
    assert os.listdir(journal.copies) == [copy.name]
    assert copy.read_bytes() == b"sent\n"
    journal.close()
