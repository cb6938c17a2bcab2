"""POSIX cases run the same way on a wtfs workspace and on a plain directory (the oracle).

``python posix_cases.py BASE USER CASE...`` runs each CASE in ``BASE/<CASE>-<USER>`` (a directory the
caller made, owned by USER, mode 0755) and prints one JSON line per case::

    {"case": "rename_file_over_dir", "steps": [["mkdir d 0755", "ok"], ["rename f -> d", "EISDIR"]]}

Each step is a label and what a user sees: ``ok``, an errno name, bytes, a stat line such as
``reg 0644 user:shared nlink=1 size=5``, time relations such as ``a= m+ c+`` (same, later, earlier
than the previous observation of the same object), or booleans (same inode?). Nothing in a result
depends on where the directory is, its inode numbers or the clock, so the result on the mount and
on the oracle must be equal.

The runner starts as root and takes the identity of USER (uid 12345, groups 12345 and 23456) or,
for two-user steps, of the other user (uid 12346, groups 12346 and 23456) with ``setgroups``,
``setresgid`` and ``setresuid``; it is not started through ``setpriv`` because the interpreter may
live where only root can read (here under /root). The real, effective and filesystem uids are the
user's, the effective capability set is empty, and only the saved uid stays 0 so that the runner
can switch back between steps: the kernel, ``default_permissions`` and the FUSE daemon see an
ordinary user. Everything is imported before that, since user 12345 may not read the standard
library either.

Times are compared as relations, and ``tick_past`` waits (spinning, at most one clock tick) until a
new timestamp must differ from the last one seen, so "did it change?" does not depend on timing.

Only the standard library: the runner is run with ``python -I``.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import json
import mmap
import os
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

# -- identities ----------------------------------------------------------------------------------

ROOT, USER, OTHER = "root", "user", "other"
SHARED_GID = 23456  # a group both unprivileged users are in
NOGROUP_GID = 34567  # a group nobody is in
IDENTITIES: dict[str, tuple[int, int, tuple[int, ...]]] = {
    ROOT: (0, 0, ()),
    USER: (12345, 12345, (12345, SHARED_GID)),
    OTHER: (12346, 12346, (12346, SHARED_GID)),
}
USER_NAMES = {0: "root", 12345: "user", 12346: "other"}
GROUP_NAMES = {0: "root", 12345: "user", 12346: "other", SHARED_GID: "shared", NOGROUP_GID: "nogroup"}
BOTH = (ROOT, USER)

# -- libc calls Python has no wrapper for ---------------------------------------------------------

_libc = ctypes.CDLL(None, use_errno=True)
AT_FDCWD = -100
AT_SYMLINK_NOFOLLOW = 0x100
AT_SYMLINK_FOLLOW = 0x400
RENAME_NOREPLACE, RENAME_EXCHANGE = 1, 2
UTIME_NOW, UTIME_OMIT = (1 << 30) - 1, (1 << 30) - 2
PR_SET_DUMPABLE = 4
CLOCK_REALTIME_COARSE = getattr(time, "CLOCK_REALTIME_COARSE", 5)  # what file timestamps are taken from
DT_NAMES = {0: "unknown", 1: "fifo", 2: "chr", 4: "dir", 6: "blk", 8: "reg", 10: "lnk", 12: "sock"}


class _Timespec(ctypes.Structure):
    _fields_ = (("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long))


class _Dirent(ctypes.Structure):  # glibc's struct dirent on 64-bit Linux
    _fields_ = (
        ("d_ino", ctypes.c_uint64),
        ("d_off", ctypes.c_int64),
        ("d_reclen", ctypes.c_ushort),
        ("d_type", ctypes.c_ubyte),
        ("d_name", ctypes.c_char * 256),
    )


_libc.renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
_libc.linkat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
_libc.utimensat.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.POINTER(_Timespec), ctypes.c_int]
_libc.opendir.argtypes = [ctypes.c_char_p]
_libc.opendir.restype = ctypes.c_void_p
_libc.readdir.argtypes = [ctypes.c_void_p]
_libc.readdir.restype = ctypes.POINTER(_Dirent)
_libc.closedir.argtypes = [ctypes.c_void_p]


def _raise_errno() -> None:
    code = ctypes.get_errno()
    raise OSError(code, os.strerror(code))


def renameat2(old: str, new: str, flags: int) -> None:
    if _libc.renameat2(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        _raise_errno()


def linkat(old: str, new: str, follow: bool) -> None:
    """link(2) itself never follows a symlink; linkat(AT_SYMLINK_FOLLOW) does (os.link in 3.11 cannot)."""
    flags = AT_SYMLINK_FOLLOW if follow else 0
    if _libc.linkat(AT_FDCWD, os.fsencode(old), AT_FDCWD, os.fsencode(new), flags) != 0:
        _raise_errno()


def utimensat(path: str, atime: int | str, mtime: int | str, follow: bool = True) -> None:
    """Times in ns, or "now" / "omit" (UTIME_NOW, UTIME_OMIT)."""

    def spec(value: int | str) -> _Timespec:
        if value == "now":
            return _Timespec(0, UTIME_NOW)
        if value == "omit":
            return _Timespec(0, UTIME_OMIT)
        assert isinstance(value, int)
        return _Timespec(value // 10**9, value % 10**9)

    times = (_Timespec * 2)(spec(atime), spec(mtime))
    if _libc.utimensat(AT_FDCWD, os.fsencode(path), times, 0 if follow else AT_SYMLINK_NOFOLLOW) != 0:
        _raise_errno()


def readdir_raw(path: str) -> list[tuple[str, str, int]]:
    """Every entry readdir(3) gives, ``.`` and ``..`` included: (name, d_type, d_ino)."""
    ctypes.set_errno(0)
    handle = _libc.opendir(os.fsencode(path))
    if not handle:
        _raise_errno()
    out = []
    try:
        while True:
            ctypes.set_errno(0)
            entry = _libc.readdir(handle)
            if not entry:
                if ctypes.get_errno():
                    _raise_errno()
                break
            d = entry.contents
            out.append((os.fsdecode(d.d_name), DT_NAMES.get(d.d_type, str(d.d_type)), d.d_ino))
    finally:
        _libc.closedir(handle)
    return sorted(out)


def tick_past(ns: int) -> None:
    """Wait (a clock tick at most, no sleep) until a new timestamp must differ from ``ns``.

    Files are stamped from the coarse clock: without this, an update within the same tick as the
    last observation could keep the same timestamp, and "changed?" would depend on timing. Times
    set far from now (utime to the past or the future) need no wait.
    """
    while 0 <= ns - time.clock_gettime_ns(CLOCK_REALTIME_COARSE) < 10**9:
        os.sched_yield()


def become(who: str) -> None:
    uid, gid, groups = IDENTITIES[who]
    os.setresuid(0, 0, 0)
    os.setgroups(list(groups))
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, 0)
    _libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # an ordinary process: it may read its own /proc/self


# -- what a user sees -----------------------------------------------------------------------------


class _Missing:
    """What a failed step returned: later steps that need it are recorded as skipped."""

    def __repr__(self) -> str:
        return "<failed>"


MISSING: object = _Missing()

_TYPES = (
    (stat.S_ISREG, "reg"),
    (stat.S_ISDIR, "dir"),
    (stat.S_ISLNK, "lnk"),
    (stat.S_ISFIFO, "fifo"),
    (stat.S_ISSOCK, "sock"),
    (stat.S_ISCHR, "chr"),
    (stat.S_ISBLK, "blk"),
)


def type_name(mode: int) -> str:
    return next((name for test, name in _TYPES if test(mode)), "?")


def show_stat(st: os.stat_result) -> str:
    """Type, permission bits (with setuid, setgid, sticky), owner, links, and size but for directories."""
    owner = USER_NAMES.get(st.st_uid, str(st.st_uid))
    group = GROUP_NAMES.get(st.st_gid, str(st.st_gid))
    line = f"{type_name(st.st_mode)} {stat.S_IMODE(st.st_mode):04o} {owner}:{group} nlink={st.st_nlink}"
    if not stat.S_ISDIR(st.st_mode):
        line += f" size={st.st_size}"
    if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
        line += f" rdev={os.major(st.st_rdev)},{os.minor(st.st_rdev)}"
    return line


def show_bytes(data: bytes) -> str:
    if len(data) <= 80:
        return repr(data)
    return f"{len(data)} bytes sha1={hashlib.sha1(data).hexdigest()[:12]} {data[:16]!r}...{data[-16:]!r}"


def show(value: object) -> object:
    if value is None:
        return "ok"
    if isinstance(value, os.stat_result):
        return show_stat(value)
    if isinstance(value, bytes):
        return show_bytes(value)
    if isinstance(value, bool | int | str | float):
        return value
    if isinstance(value, list | tuple):
        return [show(v) for v in value]
    return repr(value)


def errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, f"errno {exc.errno}")


_FLAGS = (
    ("O_TMPFILE", os.O_TMPFILE),
    ("O_CREAT", os.O_CREAT),
    ("O_EXCL", os.O_EXCL),
    ("O_TRUNC", os.O_TRUNC),
    ("O_APPEND", os.O_APPEND),
    ("O_NOFOLLOW", os.O_NOFOLLOW),
    ("O_DIRECTORY", os.O_DIRECTORY),
    ("O_NONBLOCK", os.O_NONBLOCK),
    ("O_PATH", os.O_PATH),
    ("O_NOATIME", os.O_NOATIME),
)


def flag_names(flags: int) -> str:
    names = [("O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE")[flags & 3]]
    for name, bit in _FLAGS:
        if flags & bit == bit:
            names.append(name)
            flags &= ~bit
    return "|".join(names)


# -- a case's recorder ----------------------------------------------------------------------------


class T:
    """Runs one case's steps and records what each one showed."""

    def __init__(self, user: str) -> None:
        self.user = user
        self.root = user == ROOT
        self.uid, self.gid, _ = IDENTITIES[user]
        self.who = ROOT
        self.mask = 0o022
        self.steps: list[list[object]] = []
        self.fds: list[int] = []
        self.sockets: list[socket.socket] = []
        self._times: dict[str, tuple[int, int, int]] = {}

    # identities and records

    @contextlib.contextmanager
    def as_(self, who: str) -> Iterator[None]:
        """Run the steps of the block as ``who`` (root, user or other), then as before."""
        previous = self.who
        become(who)
        self.who = who
        try:
            yield
        finally:
            become(previous)
            self.who = previous

    def umask(self, mask: int) -> None:
        os.umask(mask)
        self.mask = mask

    def step(self, label: str, value: object) -> None:
        if self.who != self.user:
            label = f"({self.who}) {label}"
        self.steps.append([label, value])

    def note(self, label: str, value: object) -> None:
        self.step(label, show(value))

    def do(self, label: str, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        """Call ``fn``; record ``ok``/its result, or the errno name. Returns the result or MISSING."""
        if any(a is MISSING for a in (*args, *kwargs.values())):
            self.step(label, "skipped")
            return MISSING
        try:
            result = fn(*args, **kwargs)
        except OSError as exc:
            self.step(label, errname(exc))
            return MISSING
        self.step(label, show(result))
        return result

    def quiet(self, label: str, fn: Callable[..., object], *args: object, **kwargs: object) -> object:
        """Like ``do`` but records only ``ok`` (for results such as descriptors and byte counts)."""
        if any(a is MISSING for a in (*args, *kwargs.values())):
            self.step(label, "skipped")
            return MISSING
        try:
            result = fn(*args, **kwargs)
        except OSError as exc:
            self.step(label, errname(exc))
            return MISSING
        self.step(label, "ok")
        return result

    # files

    def open(self, path: str, flags: int, mode: int = 0o644, label: str | None = None, **kw: object) -> object:
        if label is None:
            label = f"open {path} {flag_names(flags)}" + (f" {mode:04o}" if flags & os.O_CREAT else "")
        fd = self.quiet(label, os.open, path, flags, mode, **kw)
        if isinstance(fd, int):
            self.fds.append(fd)
        return fd

    def close(self, fd: object) -> None:
        if isinstance(fd, int):
            self.fds.remove(fd)
        self.quiet("close", os.close, fd)

    def mk(self, path: str, data: bytes = b"", mode: int = 0o644) -> None:
        """Create a new file with ``data`` and exactly ``mode``, whatever the umask: one step."""

        def create() -> None:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
            try:
                if mode & self.mask:
                    os.fchmod(fd, mode)
                os.write(fd, data)
            finally:
                os.close(fd)

        self.do(f"create {path} {mode:04o} {show_bytes(data)}", create)

    def read(self, path: str, label: str | None = None) -> object:
        def read_all() -> bytes:
            with open(path, "rb", buffering=0) as f:
                return f.read()

        return self.do(label or f"read {path}", read_all)

    def write(self, path: str, data: bytes, offset: int | None = None, flags: int = os.O_WRONLY) -> None:
        def write() -> None:
            fd = os.open(path, flags)
            try:
                if offset is None:
                    os.write(fd, data)
                else:
                    os.pwrite(fd, data, offset)
            finally:
                os.close(fd)

        where = "" if offset is None else f" at {offset}"
        self.do(f"write {show_bytes(data)} to {path}{where} ({flag_names(flags)})", write)

    def pread(self, fd: object, size: int, offset: int) -> object:
        return self.do(f"pread {size} at {offset}", os.pread, fd, size, offset)

    def pwrite(self, fd: object, data: bytes, offset: int) -> object:
        return self.do(f"pwrite {show_bytes(data)} at {offset}", os.pwrite, fd, data, offset)

    def fwrite(self, fd: object, data: bytes) -> object:
        return self.do(f"write {show_bytes(data)}", os.write, fd, data)

    # metadata

    def stat(self, path: str, label: str | None = None) -> object:
        return self.do(label or f"stat {path}", os.stat, path)

    def lstat(self, path: str, label: str | None = None) -> object:
        return self.do(label or f"lstat {path}", os.lstat, path)

    def fstat(self, fd: object, label: str = "fstat") -> object:
        return self.do(label, os.fstat, fd)

    def ls(self, path: str = ".", label: str | None = None) -> object:
        return self.do(label or f"ls {path}", lambda: sorted(os.listdir(path)))

    def same(self, a: str, b: str, follow: bool = False) -> None:
        """Whether two names are one inode."""

        def check() -> bool:
            sa, sb = os.stat(a, follow_symlinks=follow), os.stat(b, follow_symlinks=follow)
            return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)

        self.do(f"same inode {a} {b}", check)

    def times(self, path: str, follow: bool = True, fd: object = None, label: str | None = None) -> None:
        """atime/mtime/ctime against the last observation of the same object: = same, + later, - earlier."""
        key = path

        def relations() -> str:
            st = os.fstat(fd) if isinstance(fd, int) else os.stat(path, follow_symlinks=follow)
            now = (st.st_atime_ns, st.st_mtime_ns, st.st_ctime_ns)
            before = self._times.get(key)
            self._times[key] = now
            tick_past(max(now))
            if before is None:
                return "observed"
            return " ".join(
                f"{name}{'=' if b == n else '+' if n > b else '-'}"
                for name, b, n in zip("amc", before, now, strict=True)
            )

        if fd is MISSING:
            self.step(label or f"times {path}", "skipped")
            return
        self.do(label or f"times {path}", relations)

    def times_are(self, path: str, atime: int | None = None, mtime: int | None = None, follow: bool = True) -> None:
        """Whether atime/mtime are exactly the given ns values."""

        def check() -> str:
            st = os.stat(path, follow_symlinks=follow)
            parts = []
            if atime is not None:
                parts.append(f"atime={'requested' if st.st_atime_ns == atime else 'other'}")
            if mtime is not None:
                parts.append(f"mtime={'requested' if st.st_mtime_ns == mtime else 'other'}")
            return " ".join(parts)

        self.do(f"times of {path} as set", check)

    # namespace operations

    def mkdir(self, path: str, mode: int = 0o755) -> object:
        return self.do(f"mkdir {path} {mode:04o}", os.mkdir, path, mode)

    def rmdir(self, path: str) -> object:
        return self.do(f"rmdir {path}", os.rmdir, path)

    def unlink(self, path: str) -> object:
        return self.do(f"unlink {path}", os.unlink, path)

    def rename(self, old: str, new: str, flags: int = 0) -> object:
        if flags:
            name = {RENAME_NOREPLACE: "NOREPLACE", RENAME_EXCHANGE: "EXCHANGE"}.get(flags, str(flags))
            return self.do(f"renameat2 {old} -> {new} {name}", renameat2, old, new, flags)
        return self.do(f"rename {old} -> {new}", os.rename, old, new)

    def link(self, old: str, new: str, follow: bool = False) -> object:
        how = " (follow)" if follow else ""
        return self.do(f"link {old} -> {new}{how}", linkat, old, new, follow)

    def symlink(self, target: str, path: str) -> object:
        return self.do(f"symlink {path} -> {target[:40]}", os.symlink, target, path)

    def readlink(self, path: str) -> object:
        return self.do(f"readlink {path}", os.readlink, path)

    def chmod(self, path: str, mode: int) -> object:
        return self.do(f"chmod {path} {mode:04o}", os.chmod, path, mode)

    def chown(self, path: str, uid: int, gid: int, follow: bool = True) -> object:
        what = "chown" if follow else "lchown"
        return self.do(f"{what} {path} {uid}:{gid}", os.chown, path, uid, gid, follow_symlinks=follow)

    def truncate(self, path: str, size: int) -> object:
        return self.do(f"truncate {path} {size}", os.truncate, path, size)

    def mkfifo(self, path: str, mode: int = 0o644) -> object:
        return self.do(f"mkfifo {path} {mode:04o}", os.mkfifo, path, mode)

    def utime(self, path: str, ns: tuple[int, int] | None = None, follow: bool = True) -> object:
        what = "now" if ns is None else "explicit"
        label = f"utime {path} {what}" + ("" if follow else " (nofollow)")
        if ns is None:
            return self.do(label, os.utime, path, follow_symlinks=follow)
        return self.do(label, os.utime, path, ns=ns, follow_symlinks=follow)

    # set-ups shared by several cases

    def pub(self, mode: int = 0o777) -> str:
        """A directory of ours that the other user can write in."""
        self.mkdir("pub")
        self.chmod("pub", mode)
        return "pub"

    def give(self, path: str, who: str, gid: int | None = None, mode: int | None = None) -> None:
        """As root: make ``path`` belong to ``who`` (and ``gid``), then chmod it."""
        uid, own_gid, _ = IDENTITIES[who]
        with self.as_(ROOT):
            self.chown(path, uid, own_gid if gid is None else gid)
            if mode is not None:
                self.chmod(path, mode)

    def others_file(self, path: str = "pub/theirs", mode: int = 0o644, data: bytes = b"theirs") -> str:
        """A file the other user made, in ``pub``."""
        if not os.path.isdir("pub"):
            self.pub()
        with self.as_(OTHER):
            self.mk(path, data, mode)
        return path


# -- the cases ------------------------------------------------------------------------------------


CaseFn = Callable[[T], None]


@dataclass(frozen=True)
class Case:
    name: str
    fn: Callable[[T], None]
    users: tuple[str, ...] = BOTH
    family: str = ""
    xfail: str | None = None  # why the mount may differ from the oracle and that is accepted


CASES: dict[str, Case] = {}


def case(users: tuple[str, ...] = BOTH, xfail: str | None = None) -> Callable[[CaseFn], CaseFn]:
    def register(fn: Callable[[T], None]) -> Callable[[T], None]:
        name = fn.__name__
        assert name not in CASES, name
        CASES[name] = Case(name, fn, users, name.split("_")[0], xfail)
        return fn

    return register


def add_case(name: str, fn: Callable[[T], None], users: tuple[str, ...] = BOTH) -> None:
    assert name not in CASES, name
    CASES[name] = Case(name, fn, users, name.split("_")[0])


O_RDONLY, O_WRONLY, O_RDWR = os.O_RDONLY, os.O_WRONLY, os.O_RDWR
O_CREAT, O_EXCL, O_TRUNC, O_APPEND = os.O_CREAT, os.O_EXCL, os.O_TRUNC, os.O_APPEND
O_DIRECTORY, O_NOFOLLOW = os.O_DIRECTORY, os.O_NOFOLLOW
OLD = 1_000_000_000 * 10**9 + 123_456_789  # 2001-09-09, with nanoseconds
OLDER = 900_000_000 * 10**9 + 987_654_321


# open(2) and friends ----------------------------------------------------------------------------


@case()
def open_creat_new(t: T) -> None:
    fd = t.open("f", O_CREAT | O_WRONLY, 0o644)
    t.fwrite(fd, b"hello")
    t.close(fd)
    t.stat("f")
    t.read("f")
    t.ls()


@case()
def open_creat_excl_existing(t: T) -> None:
    t.mk("f", b"keep")
    t.open("f", O_CREAT | O_EXCL | O_WRONLY, 0o600)
    t.open("f", O_CREAT | O_EXCL | O_RDWR | O_TRUNC, 0o600)
    t.stat("f")
    t.read("f")


@case()
def open_creat_excl_new(t: T) -> None:
    t.open("f", O_CREAT | O_EXCL | O_RDWR, 0o640)
    t.stat("f")


@case()
def open_creat_existing_keeps_mode_and_data(t: T) -> None:
    t.mk("f", b"data", 0o600)
    fd = t.open("f", O_CREAT | O_WRONLY, 0o777)
    t.close(fd)
    t.stat("f")
    t.read("f")


@case()
def open_trunc(t: T) -> None:
    t.mk("f", b"hello world")
    t.times("f")
    fd = t.open("f", O_WRONLY | O_TRUNC)
    t.stat("f")
    t.times("f")
    t.fwrite(fd, b"new")
    t.close(fd)
    t.read("f")


@case()
def open_rdonly_trunc(t: T) -> None:
    t.mk("f", b"hello")
    t.open("f", O_RDONLY | O_TRUNC)
    t.stat("f")


@case()
def open_trunc_readonly_file(t: T) -> None:
    t.mk("f", b"hello", 0o444)
    t.open("f", O_WRONLY | O_TRUNC)
    t.stat("f")


@case()
def open_append_write_lands_at_end(t: T) -> None:
    t.mk("f", b"abc")
    fd = t.open("f", O_WRONLY | O_APPEND)
    t.do("lseek 0", os.lseek, fd, 0, os.SEEK_SET)
    t.fwrite(fd, b"XY")
    t.do("offset after write", os.lseek, fd, 0, os.SEEK_CUR)
    t.close(fd)
    t.read("f")


@case()
def open_append_pwrite(t: T) -> None:
    t.mk("f", b"abc")
    fd = t.open("f", O_RDWR | O_APPEND)
    t.pwrite(fd, b"Z", 0)  # Linux appends: pwrite ignores the offset under O_APPEND
    t.pread(fd, 10, 0)
    t.close(fd)


@case()
def open_append_two_descriptors(t: T) -> None:
    t.mk("f", b"abc")
    a = t.open("f", O_WRONLY | O_APPEND)
    b = t.open("f", O_WRONLY | O_APPEND)
    t.fwrite(a, b"1")
    t.fwrite(b, b"2")
    t.fwrite(a, b"3")
    t.close(a)
    t.close(b)
    t.read("f")


@case()
def open_append_after_growth_by_another_descriptor(t: T) -> None:
    t.mk("f", b"abc")
    a = t.open("f", O_WRONLY | O_APPEND)
    b = t.open("f", O_WRONLY)
    t.pwrite(b, b"DEFG", 3)
    t.fwrite(a, b"X")
    t.close(a)
    t.close(b)
    t.read("f")


@case()
def open_nofollow_symlink(t: T) -> None:
    t.mk("f", b"x")
    t.symlink("f", "l")
    t.open("l", O_RDONLY | O_NOFOLLOW)
    t.open("l", O_WRONLY | O_NOFOLLOW)
    t.open("l", O_WRONLY | O_CREAT | O_NOFOLLOW)
    t.open("f", O_RDONLY | O_NOFOLLOW)


@case()
def open_path_nofollow_symlink(t: T) -> None:
    t.symlink("missing", "l")
    fd = t.open("l", os.O_PATH | O_NOFOLLOW)
    t.fstat(fd)


@case()
def open_directory_flag(t: T) -> None:
    t.mk("f")
    t.mkdir("d")
    t.symlink("d", "ld")
    t.symlink("f", "lf")
    t.open("f", O_RDONLY | O_DIRECTORY)
    t.open("lf", O_RDONLY | O_DIRECTORY)
    t.open("missing", O_RDONLY | O_DIRECTORY)
    t.open("d", O_RDONLY | O_DIRECTORY)
    t.open("ld", O_RDONLY | O_DIRECTORY)
    t.open("ld", O_RDONLY | O_DIRECTORY | O_NOFOLLOW)


@case()
def open_dir_for_writing(t: T) -> None:
    t.mkdir("d")
    t.open("d", O_WRONLY)
    t.open("d", O_RDWR)
    t.open("d", O_WRONLY | O_CREAT)
    t.open("d", O_RDONLY | O_CREAT)
    t.open("d", O_RDONLY | O_TRUNC)
    t.open("d", O_RDONLY | O_CREAT | O_EXCL)
    fd = t.open("d", O_RDONLY)
    t.fstat(fd)
    t.do("read a directory descriptor", os.read, fd, 10)


@case()
def open_missing(t: T) -> None:
    t.mk("f")
    t.open("nope", O_RDONLY)
    t.open("nope/x", O_RDONLY)
    t.open("f/x", O_RDONLY)
    t.open("nope/x", O_CREAT | O_WRONLY)
    t.open("f/x", O_CREAT | O_WRONLY)
    t.open("", O_RDONLY)


@case()
def open_creat_through_dangling_symlink(t: T) -> None:
    t.symlink("target", "l")
    fd = t.open("l", O_CREAT | O_WRONLY, 0o600)
    t.fwrite(fd, b"via link")
    t.close(fd)
    t.lstat("l")
    t.stat("target")
    t.read("target")
    t.symlink("t2", "l2")
    t.open("l2", O_CREAT | O_EXCL | O_WRONLY)
    t.stat("t2")
    t.mk("t3")
    t.symlink("t3", "l3")
    t.open("l3", O_CREAT | O_EXCL | O_WRONLY)


@case()
def open_trailing_slash(t: T) -> None:
    t.mk("f")
    t.mkdir("d")
    t.open("new/", O_CREAT | O_WRONLY)
    t.open("f/", O_RDONLY)
    t.open("d/", O_RDONLY)
    t.ls()


@case()
def open_readonly_file(t: T) -> None:
    t.mk("f", b"ro", 0o444)
    t.open("f", O_RDONLY)
    t.open("f", O_WRONLY)
    t.open("f", O_RDWR)


@case()
def open_writeonly_file(t: T) -> None:
    t.mk("f", b"wo", 0o200)
    t.open("f", O_RDONLY)
    fd = t.open("f", O_WRONLY)
    t.fwrite(fd, b"WO")
    t.close(fd)
    t.stat("f")


@case()
def open_mode_zero_file(t: T) -> None:
    t.mk("f", b"zero", 0o000)
    t.open("f", O_RDONLY)
    t.open("f", O_WRONLY)
    t.stat("f")


@case()
def open_noatime(t: T) -> None:
    t.mk("mine", b"m")
    t.open("mine", O_RDONLY | os.O_NOATIME)
    theirs = t.others_file(mode=0o644)
    t.open(theirs, O_RDONLY)
    t.open(theirs, O_RDONLY | os.O_NOATIME)


@case()
def open_creat_in_readonly_dir(t: T) -> None:
    t.mkdir("ro")
    t.mk("ro/exists", b"e")
    t.chmod("ro", 0o555)
    t.open("ro/new", O_CREAT | O_WRONLY)
    fd = t.open("ro/exists", O_CREAT | O_WRONLY)
    t.fwrite(fd, b"E")
    t.close(fd)
    t.ls("ro")
    t.chmod("ro", 0o755)


@case()
def open_descriptor_survives_chmod(t: T) -> None:
    fd = t.open("f", O_CREAT | O_RDWR, 0o644)
    t.chmod("f", 0o000)
    t.fwrite(fd, b"still")
    t.pread(fd, 10, 0)
    t.fstat(fd)
    t.open("f", O_RDONLY)
    t.close(fd)


@case()
def open_descriptor_survives_rename(t: T) -> None:
    t.mk("f", b"one")
    fd = t.open("f", O_RDWR)
    t.rename("f", "g")
    t.pwrite(fd, b"TWO", 0)
    t.fstat(fd)
    t.close(fd)
    t.read("g")
    t.ls()


# reads, writes, sizes --------------------------------------------------------------------------


@case()
def io_roundtrip(t: T) -> None:
    fd = t.open("f", O_CREAT | O_RDWR)
    t.fwrite(fd, b"0123456789")
    t.pread(fd, 4, 3)
    t.do("lseek end", os.lseek, fd, 0, os.SEEK_END)
    t.do("read at end", os.read, fd, 10)
    t.pwrite(fd, b"!", 20)
    t.fstat(fd)
    t.pread(fd, 30, 0)
    t.close(fd)


@case()
def io_sparse_file(t: T) -> None:
    fd = t.open("f", O_CREAT | O_WRONLY)
    t.do("lseek 1 MiB", os.lseek, fd, 1 << 20, os.SEEK_SET)
    t.fwrite(fd, b"end")
    t.do("fsync", os.fsync, fd)
    t.close(fd)
    t.stat("f")
    fd = t.open("f", O_RDONLY)
    t.pread(fd, 8, (1 << 20) - 5)
    t.pread(fd, 4096, 4096)
    t.close(fd)


@case()
def io_large_write(t: T) -> None:
    data = bytes(range(256)) * 1024 + b"tail"  # 256 KiB and a bit: several FUSE requests
    fd = t.open("f", O_CREAT | O_WRONLY)
    t.fwrite(fd, data)
    t.close(fd)
    t.stat("f")
    t.read("f")


@case()
def io_overwrite_middle(t: T) -> None:
    t.mk("f", b"a" * 10000)
    t.write("f", b"MIDDLE", offset=4998)
    t.stat("f")
    fd = t.open("f", O_RDONLY)
    t.pread(fd, 10, 4996)
    t.close(fd)


@case()
def io_two_descriptors_see_each_other(t: T) -> None:
    a = t.open("f", O_CREAT | O_RDWR)
    b = t.open("f", O_RDWR)
    t.fwrite(a, b"first")
    t.pread(b, 10, 0)
    t.pwrite(b, b"F", 0)
    t.pread(a, 10, 0)
    t.close(a)
    t.close(b)


@case()
def io_fsync_and_fdatasync(t: T) -> None:
    fd = t.open("f", O_CREAT | O_RDWR)
    t.fwrite(fd, b"sync")
    t.do("fsync", os.fsync, fd)
    t.do("fdatasync", os.fdatasync, fd)
    d = t.open(".", O_RDONLY | O_DIRECTORY)
    t.do("fsync of the directory", os.fsync, d)
    t.close(fd)
    t.close(d)


@case()
def io_posix_fallocate(t: T) -> None:
    fd = t.open("f", O_CREAT | O_RDWR)
    t.fwrite(fd, b"head")
    t.do("posix_fallocate 0..100000", os.posix_fallocate, fd, 0, 100000)
    t.fstat(fd)
    t.pread(fd, 8, 0)
    t.pread(fd, 8, 99992)
    t.close(fd)


@case()
def io_mmap_shared_write(t: T) -> None:
    t.mk("f", b"." * 8192)
    fd = t.open("f", O_RDWR)

    def poke() -> None:
        m = mmap.mmap(fd, 8192)  # type: ignore[arg-type]
        try:
            m[0:5] = b"hello"
            m[5000:5005] = b"world"
            m.flush()
        finally:
            m.close()

    t.do("mmap, write, msync", poke)
    t.close(fd)
    fd = t.open("f", O_RDONLY)
    t.pread(fd, 6, 0)
    t.pread(fd, 6, 5000)
    t.close(fd)


@case()
def io_large_offsets(t: T) -> None:
    fd = t.open("f", O_CREAT | O_RDWR)
    t.pwrite(fd, b"far", 5 << 30)  # past 4 GiB: 64-bit offsets all the way
    t.fstat(fd)
    t.pread(fd, 8, (5 << 30) - 2)
    t.do("lseek end", os.lseek, fd, 0, os.SEEK_END)
    t.do("ftruncate to 3 GiB", os.ftruncate, fd, 3 << 30)
    t.fstat(fd)
    t.close(fd)


@case()
def io_locks(t: T) -> None:
    t.mk("f", b"lock me")
    a = t.open("f", O_RDWR)
    b = t.open("f", O_RDWR)
    t.do("flock a LOCK_EX|LOCK_NB", fcntl.flock, a, fcntl.LOCK_EX | fcntl.LOCK_NB)
    t.do("flock b LOCK_EX|LOCK_NB", fcntl.flock, b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    t.do("flock b LOCK_SH|LOCK_NB", fcntl.flock, b, fcntl.LOCK_SH | fcntl.LOCK_NB)
    t.do("flock a LOCK_UN", fcntl.flock, a, fcntl.LOCK_UN)
    t.do("flock b LOCK_SH|LOCK_NB", fcntl.flock, b, fcntl.LOCK_SH | fcntl.LOCK_NB)
    t.do("lockf a F_TLOCK", fcntl.lockf, a, fcntl.LOCK_EX | fcntl.LOCK_NB)
    t.do("lockf b F_TLOCK (same process)", fcntl.lockf, b, fcntl.LOCK_EX | fcntl.LOCK_NB)
    t.close(a)
    t.close(b)


@case()
def io_read_after_close_and_reopen(t: T) -> None:
    t.mk("f", b"persisted bytes")
    t.read("f")
    t.write("f", b"P", offset=0)
    t.read("f")


# create modes under umasks ----------------------------------------------------------------------

UMASKS = (0o000, 0o022, 0o027, 0o077)
MODES = (0o777, 0o644, 0o600, 0o4755, 0o2755, 0o1777, 0o7777)


def _mode_case(kind: str, umask: int, mode: int) -> Callable[[T], None]:
    def run(t: T) -> None:
        t.umask(umask)
        if kind == "file":
            fd = t.open("x", O_CREAT | O_EXCL | O_WRONLY, mode)
            t.close(fd)
        elif kind == "dir":
            t.mkdir("x", mode)
        else:
            t.mkfifo("x", mode)
        t.lstat("x")

    return run


for _kind in ("file", "dir"):
    for _umask in UMASKS:
        for _mode in MODES:
            add_case(f"mode_{_kind}_{_mode:04o}_umask_{_umask:03o}", _mode_case(_kind, _umask, _mode))
for _umask, _mode in ((0o000, 0o777), (0o022, 0o666), (0o077, 0o644), (0o022, 0o4755)):
    add_case(f"mode_fifo_{_mode:04o}_umask_{_umask:03o}", _mode_case("fifo", _umask, _mode))


@case()
def mode_symlink_ignores_umask(t: T) -> None:
    t.umask(0o077)
    t.symlink("anything", "l")
    t.lstat("l")


@case()
def mode_socket_under_umask(t: T) -> None:
    t.umask(0o027)
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.sockets.append(s)
    t.do("bind s", s.bind, "s")
    t.lstat("s")


# mkdir and rmdir ------------------------------------------------------------------------------


@case()
def dir_mkdir_basic(t: T) -> None:
    t.stat(".")
    t.mkdir("d", 0o750)
    t.stat("d")
    t.stat(".")
    t.ls()
    t.ls("d")


@case()
def dir_mkdir_existing_names(t: T) -> None:
    t.mkdir("d")
    t.mk("f")
    t.symlink("nowhere", "dangling")
    t.mkdir("d")
    t.mkdir("f")
    t.mkdir("dangling")
    t.mkdir(".")
    t.mkdir("..")
    t.mkdir("d/.")
    t.lstat("dangling")


@case()
def dir_mkdir_bad_parents(t: T) -> None:
    t.mk("f")
    t.mkdir("missing/d")
    t.mkdir("f/d")
    t.mkdir("")


@case()
def dir_mkdir_trailing_slash(t: T) -> None:
    t.mkdir("e/")
    t.stat("e")
    t.mkdir("e2//")
    t.ls()


@case()
def dir_rmdir_not_empty(t: T) -> None:
    t.mkdir("a")
    t.mk("a/f")
    t.mkdir("b")
    t.mk("b/.hidden")
    t.mkdir("c")
    t.mkdir("c/sub")
    t.rmdir("a")
    t.rmdir("b")
    t.rmdir("c")
    t.ls()


@case()
def dir_rmdir_errors(t: T) -> None:
    t.mkdir("d")
    t.mk("f")
    t.symlink("d", "ld")
    t.rmdir("missing")
    t.rmdir("f")
    t.rmdir("ld")
    t.rmdir("ld/")
    t.rmdir(".")
    t.rmdir("..")
    t.rmdir("d/.")
    t.rmdir("d/..")
    t.rmdir("f/")
    t.rmdir("d/")
    t.ls()


@case()
def dir_rmdir_nlink(t: T) -> None:
    t.mkdir("a")
    t.mkdir("a/b")
    t.mkdir("a/c")
    t.mk("a/f")
    t.stat("a")
    t.rmdir("a/b")
    t.stat("a")
    t.unlink("a/f")
    t.rmdir("a/c")
    t.stat("a")
    t.ls("a")
    t.rmdir("a")
    t.stat("a")


@case()
def dir_rmdir_cwd(t: T) -> None:
    t.mkdir("d")
    t.do("chdir d", os.chdir, "d")
    t.rmdir("../d")
    t.ls(".")
    t.open("x", O_CREAT | O_WRONLY)
    t.mkdir("y")
    t.stat(".")
    t.do("chdir ..", os.chdir, "..")
    t.ls()


@case()
def dir_rmdir_open_descriptor(t: T) -> None:
    t.mkdir("d")
    fd = t.open("d", O_RDONLY | O_DIRECTORY)
    t.rmdir("d")
    t.fstat(fd)
    t.do("ls via the descriptor", lambda fd: sorted(os.listdir(fd)), fd)
    t.do("mkdir in it via the descriptor", os.mkdir, "x", dir_fd=fd)
    t.close(fd)


@case()
def dir_in_readonly_parent(t: T) -> None:
    t.mkdir("p")
    t.mkdir("p/d")
    t.chmod("p", 0o555)
    t.rmdir("p/d")
    t.mkdir("p/e")
    t.ls("p")
    t.chmod("p", 0o755)


@case()
def dir_nlink_counts(t: T) -> None:
    t.mkdir("p")
    for name in ("a", "b", "c"):
        t.mkdir(f"p/{name}")
    t.mk("p/file")
    t.symlink("a", "p/link")
    t.stat("p")
    t.stat("p/a")
    t.rename("p/c", "c")
    t.stat("p")
    t.stat(".")


# readdir ----------------------------------------------------------------------------------------


@case()
def readdir_names(t: T) -> None:
    for name in ("b", "a", "c.txt", ".hidden", "UPPER"):
        t.mk(name)
    t.mkdir("dir")
    t.symlink("a", "link")
    t.ls()


@case()
def readdir_dots_and_types(t: T) -> None:
    t.mk("f")
    t.mkdir("d")
    t.symlink("f", "l")
    t.mkfifo("p")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.sockets.append(s)
    t.do("bind s", s.bind, "s")
    t.do("readdir .", lambda: [f"{name} {kind}" for name, kind, _ in readdir_raw(".")])
    t.do("readdir d", lambda: [f"{name} {kind}" for name, kind, _ in readdir_raw("d")])


@case()
def readdir_ino_matches_stat(t: T) -> None:
    t.mk("f")
    t.mkdir("d")
    t.symlink("f", "l")
    t.link("f", "hard")

    def check(where: str) -> list[str]:
        return [f"{name} {ino == os.lstat(os.path.join(where, name)).st_ino}" for name, _, ino in readdir_raw(where)]

    t.do("d_ino == st_ino in .", check, ".")
    t.do("d_ino == st_ino in d", check, "d")


@case()
def readdir_many(t: T) -> None:
    names = [f"entry-{i:04d}-" + "n" * (i % 50) for i in range(600)]

    def make() -> None:
        for name in names:
            os.close(os.open(name, O_CREAT | O_WRONLY, 0o644))

    t.do("create 600 files", make)

    def summary() -> str:
        listed = sorted(os.listdir("."))
        return f"{len(listed)} names, all expected: {listed == sorted(names)}"

    t.do("ls", summary)
    t.do("readdir (dots too) count", lambda: len(readdir_raw(".")))

    def remove_odd() -> None:
        for name in names[1::2]:
            os.unlink(name)

    t.do("unlink every other one", remove_odd)
    t.do("ls after", lambda: f"{len(os.listdir('.'))} names, {sorted(os.listdir('.')) == sorted(names[0::2])}")


@case()
def readdir_after_changes(t: T) -> None:
    for i in range(5):
        t.mk(f"f{i}")
    t.ls()
    t.unlink("f1")
    t.rename("f2", "g2")
    t.mkdir("f1")
    t.ls()


@case()
def readdir_empty(t: T) -> None:
    t.mkdir("d")
    t.ls("d")
    t.do("readdir d", lambda: [name for name, _, _ in readdir_raw("d")])


@case()
def readdir_strange_names(t: T) -> None:
    names = [
        b"with space",
        b"new\nline",
        b"tab\tx",
        b"back\\slash",
        b"-dash",
        b"...",
        b"\xc3\xa9t\xc3\xa9",
        b"\xff\xfe",
    ]
    names += [b"emoji-\xf0\x9f\x98\x80", b"quote'\"", b"star*?", b"a:b;c"]

    def make() -> None:
        for name in names:
            os.close(os.open(name, O_CREAT | O_WRONLY, 0o644))

    t.do("create names", make)
    t.do("ls (bytes)", lambda: [repr(n) for n in sorted(os.listdir(b"."))])
    t.do("stat each", lambda: [type_name(os.lstat(n).st_mode) for n in names])


@case()
def readdir_permissions(t: T) -> None:
    for mode in (0o300, 0o100, 0o400, 0o500):
        d = f"d{mode:o}"
        t.mkdir(d)
        t.mk(f"{d}/f", b"x")
        t.chmod(d, mode)
        t.ls(d)
        t.stat(f"{d}/f")
        t.read(f"{d}/f")
        t.chmod(d, 0o755)


# unlink -----------------------------------------------------------------------------------------


@case()
def unlink_file(t: T) -> None:
    t.mk("f", b"x")
    t.unlink("f")
    t.stat("f")
    t.ls()
    t.unlink("f")


@case()
def unlink_errors(t: T) -> None:
    t.mkdir("d")
    t.mk("f")
    t.unlink("missing")
    t.unlink("d")
    t.unlink("d/")
    t.unlink("f/")
    t.unlink(".")
    t.unlink("missing/f")
    t.unlink("f/x")
    t.ls()


@case()
def unlink_symlinks(t: T) -> None:
    t.mk("f", b"target")
    t.mkdir("d")
    t.symlink("f", "lf")
    t.symlink("d", "ld")
    t.unlink("lf")
    t.unlink("ld")
    t.ls()
    t.read("f")


@case()
def unlink_readonly_file_in_writable_dir(t: T) -> None:
    t.mk("f", b"ro", 0o444)
    t.unlink("f")
    t.ls()


@case()
def unlink_in_readonly_dir(t: T) -> None:
    t.mkdir("d")
    t.mk("d/f")
    t.chmod("d", 0o555)
    t.unlink("d/f")
    t.chmod("d", 0o600)
    t.unlink("d/f")
    t.chmod("d", 0o755)
    t.ls("d")


@case()
def unlink_updates_times(t: T) -> None:
    t.mk("f")
    t.link("f", "g")
    t.times(".")
    t.times("g")
    t.unlink("f")
    t.times(".")
    t.times("g")
    t.stat("g")


# rename -----------------------------------------------------------------------------------------


@case()
def rename_file_new_name(t: T) -> None:
    t.mk("a", b"A")
    t.rename("a", "b")
    t.ls()
    t.read("b")
    t.stat("b")


@case()
def rename_file_over_file(t: T) -> None:
    t.mk("a", b"A")
    t.mk("b", b"BB", 0o600)
    t.link("a", "a2")
    t.rename("a", "b")
    t.ls()
    t.read("b")
    t.stat("b")
    t.same("b", "a2")


@case()
def rename_to_other_dir(t: T) -> None:
    t.mkdir("x")
    t.mkdir("y")
    t.mk("x/f", b"f")
    t.rename("x/f", "y/g")
    t.ls("x")
    t.ls("y")
    t.read("y/g")


@case()
def rename_dir_over_empty_dir(t: T) -> None:
    t.mkdir("p")
    t.mkdir("q")
    t.mkdir("p/a")
    t.mk("p/a/inside")
    t.mkdir("q/b")
    t.stat("p")
    t.stat("q")
    t.rename("p/a", "q/b")
    t.stat("p")
    t.stat("q")
    t.ls("q/b")
    t.ls("p")


@case()
def rename_dir_over_nonempty_dir(t: T) -> None:
    t.mkdir("a")
    t.mkdir("b")
    t.mk("b/f")
    t.rename("a", "b")
    t.ls()
    t.ls("b")


@case()
def rename_kind_mismatch(t: T) -> None:
    t.mk("f")
    t.mkdir("d")
    t.mkdir("e")
    t.rename("f", "d")
    t.rename("d", "f")
    t.rename("f", "e/")
    t.rename("f/", "g")
    t.rename("d/", "d2")
    t.ls()


@case()
def rename_into_own_subdir(t: T) -> None:
    t.mkdir("a")
    t.mkdir("a/b")
    t.rename("a", "a/b/c")
    t.rename("a", "a/c")
    t.rename("a/b", "a/b/c")
    t.ls()
    t.ls("a")


@case()
def rename_to_itself(t: T) -> None:
    t.mk("f", b"x")
    t.mkdir("d")
    t.rename("f", "f")
    t.rename("d", "d")
    t.link("f", "g")
    t.rename("f", "g")  # two links to one inode: nothing happens, both stay
    t.ls()
    t.stat("f")


@case()
def rename_errors(t: T) -> None:
    t.mk("f")
    t.mkdir("d")
    t.rename("missing", "x")
    t.rename("f", "missing/x")
    t.rename("f", "f/x")
    t.rename(".", "x")
    t.rename("d/.", "x")
    t.rename("d/..", "x")
    t.rename("f", ".")
    t.rename("d", "..")
    t.ls()


@case()
def rename_symlink_moves_the_link(t: T) -> None:
    t.mk("f", b"target")
    t.mkdir("sub")
    t.symlink("f", "l")
    t.rename("l", "sub/l")
    t.readlink("sub/l")
    t.lstat("sub/l")
    t.stat("sub/l")
    t.read("f")


@case()
def rename_noreplace(t: T) -> None:
    t.mk("a", b"A")
    t.mk("b", b"B")
    t.mkdir("d")
    t.mkdir("e")
    t.rename("a", "b", RENAME_NOREPLACE)
    t.rename("d", "e", RENAME_NOREPLACE)
    t.rename("a", "c", RENAME_NOREPLACE)
    t.rename("missing", "z", RENAME_NOREPLACE)
    t.ls()
    t.read("b")
    t.read("c")


@case()
def rename_exchange_file_and_dir(t: T) -> None:
    t.mk("f", b"file")
    t.mkdir("d")
    t.mk("d/inside")
    t.rename("f", "d", RENAME_EXCHANGE)
    t.lstat("f")
    t.lstat("d")
    t.ls("f")
    t.read("d")


@case()
def rename_exchange_files(t: T) -> None:
    t.mk("a", b"A", 0o600)
    t.mk("b", b"BB", 0o644)
    t.link("a", "a-link")
    t.rename("a", "b", RENAME_EXCHANGE)
    t.read("a")
    t.read("b")
    t.stat("a")
    t.same("b", "a-link")


@case()
def rename_exchange_errors(t: T) -> None:
    t.mk("a")
    t.mkdir("d")
    t.mkdir("d/sub")
    t.rename("a", "missing", RENAME_EXCHANGE)
    t.rename("missing", "a", RENAME_EXCHANGE)
    t.rename("a", "d", RENAME_EXCHANGE | RENAME_NOREPLACE)
    t.rename("d", "d/sub", RENAME_EXCHANGE)
    t.rename("d/sub", "d", RENAME_EXCHANGE)
    t.ls()


@case()
def rename_exchange_dirs_across_parents(t: T) -> None:
    t.mkdir("p")
    t.mkdir("q")
    t.mkdir("p/d")
    t.mk("q/f")
    t.stat("p")
    t.stat("q")
    t.rename("p/d", "q/f", RENAME_EXCHANGE)
    t.stat("p")
    t.stat("q")
    t.lstat("p/d")
    t.lstat("q/f")
    t.same("q/f/..", "q", follow=True)


@case()
def rename_dir_updates_dotdot(t: T) -> None:
    t.mkdir("a")
    t.mkdir("b")
    t.mkdir("a/x")
    t.rename("a/x", "b/x")
    t.same("b/x/..", "b", follow=True)
    t.stat("a")
    t.stat("b")


@case()
def rename_over_open_file(t: T) -> None:
    t.mk("a", b"old")
    t.mk("b", b"new")
    fd = t.open("a", O_RDWR)
    t.rename("b", "a")
    t.pread(fd, 10, 0)
    t.fstat(fd)
    t.pwrite(fd, b"OLD", 0)
    t.read("a")
    t.close(fd)
    t.ls()


@case()
def rename_updates_times(t: T) -> None:
    t.mkdir("x")
    t.mkdir("y")
    t.mk("x/f")
    t.times("x")
    t.times("y")
    t.times("x/f")
    t.rename("x/f", "y/f")
    t.times("x")
    t.times("y")
    t.times("y/f")


@case()
def rename_in_readonly_dir(t: T) -> None:
    t.mkdir("ro")
    t.mkdir("rw")
    t.mk("ro/f")
    t.mk("rw/g")
    t.chmod("ro", 0o555)
    t.rename("ro/f", "rw/f")
    t.rename("rw/g", "ro/g")
    t.rename("ro/f", "ro/h")
    t.chmod("ro", 0o755)
    t.ls("ro")
    t.ls("rw")


@case()
def rename_readonly_dir_across_parents(t: T) -> None:
    t.mkdir("d")
    t.mkdir("other")
    t.chmod("d", 0o555)
    t.rename("d", "other/d")  # moving a directory rewrites its "..": needs write permission on it
    t.rename("d", "d2")  # within one parent it does not
    t.ls()
    t.ls("other")
    t.chmod("d2", 0o755)


@case()
def rename_over_readonly_file(t: T) -> None:
    t.mk("a", b"A")
    t.mk("b", b"B", 0o444)
    t.rename("a", "b")
    t.read("b")


# hard links -------------------------------------------------------------------------------------


@case()
def link_counts_and_inodes(t: T) -> None:
    t.mk("a", b"data")
    t.stat("a")
    t.link("a", "b")
    t.stat("a")
    t.link("b", "c")
    t.stat("a")
    t.stat("c")
    t.same("a", "b")
    t.same("a", "c")
    t.ls()


@case()
def link_chmod_through_one(t: T) -> None:
    t.mk("a", b"data")
    t.link("a", "b")
    t.chmod("b", 0o600)
    t.stat("a")


@case()
def link_write_through_one(t: T) -> None:
    t.mk("a", b"data")
    t.link("a", "b")
    t.write("b", b"DA", offset=0)
    t.read("a")
    t.truncate("a", 2)
    t.read("b")


@case()
def link_unlink_one(t: T) -> None:
    t.mk("a", b"data")
    t.link("a", "b")
    t.unlink("a")
    t.stat("b")
    t.read("b")
    t.ls()


@case()
def link_errors(t: T) -> None:
    t.mk("a")
    t.mk("b")
    t.mkdir("d")
    t.link("d", "d2")
    t.link("missing", "x")
    t.link("a", "b")
    t.link("a", "missing/x")
    t.link("a/", "y")
    t.link("a", "z/")
    t.link("a", "d")
    t.ls()


@case()
def link_to_symlink(t: T) -> None:
    t.mk("f", b"target")
    t.symlink("f", "l")
    t.link("l", "l2")
    t.lstat("l2")
    t.readlink("l2")
    t.link("l", "f2", follow=True)
    t.lstat("f2")
    t.same("f", "f2")
    t.stat("f")


@case()
def link_updates_times(t: T) -> None:
    t.mk("a")
    t.times("a")
    t.times(".")
    t.link("a", "b")
    t.times("a")
    t.times(".")


@case()
def link_others_file(t: T) -> None:
    secret = t.others_file("pub/secret", 0o600)
    shared = t.others_file("pub/shared", 0o666)
    t.link(secret, "pub/mysecret")  # protected_hardlinks: neither owner nor able to read and write
    t.link(shared, "pub/myshared")
    t.ls("pub")


@case()
def link_in_readonly_dir(t: T) -> None:
    t.mk("a")
    t.mkdir("ro")
    t.chmod("ro", 0o555)
    t.link("a", "ro/a")
    t.chmod("ro", 0o755)


@case()
def link_survives_rename(t: T) -> None:
    t.mk("a", b"x")
    t.link("a", "b")
    t.mkdir("d")
    t.rename("a", "d/a")
    t.same("d/a", "b")
    t.stat("b")


# symlinks ---------------------------------------------------------------------------------------


@case()
def symlink_readlink_lstat_stat(t: T) -> None:
    t.mk("f", b"target", 0o600)
    t.symlink("f", "l")
    t.readlink("l")
    t.lstat("l")
    t.stat("l")
    t.read("l")


@case()
def symlink_dangling(t: T) -> None:
    t.symlink("missing", "l")
    t.readlink("l")
    t.lstat("l")
    t.stat("l")
    t.open("l", O_RDONLY)
    t.ls()


@case()
def symlink_errors(t: T) -> None:
    t.mk("f")
    t.mkdir("d")
    t.readlink("f")
    t.readlink("d")
    t.readlink("missing")
    t.symlink("x", "f")
    t.symlink("x", "d")
    t.symlink("", "empty")
    t.symlink("x", "missing/l")
    t.symlink("x", "f/l")
    t.ls()


@case()
def symlink_loops(t: T) -> None:
    t.symlink("self", "self")
    t.symlink("b", "a")
    t.symlink("a", "b")
    t.stat("self")
    t.open("a", O_RDONLY)
    t.open("a", O_CREAT | O_WRONLY)
    t.lstat("a")
    t.stat("a/x")


@case()
def symlink_long_targets(t: T) -> None:
    t.symlink("x" * 255, "l255")
    t.symlink("y/" * 1000, "l2000")
    t.symlink("z" * 4095, "l4095")
    t.symlink("z" * 4096, "l4096")
    t.readlink("l2000")
    t.readlink("l4095")
    t.lstat("l4095")


@case()
def symlink_to_dir_traversal(t: T) -> None:
    t.mkdir("d")
    t.mk("d/f", b"in d")
    t.symlink("d", "ld")
    t.symlink("d/f", "lf")
    t.ls("ld")
    t.read("ld/f")
    t.stat("ld/")
    t.stat("lf/")
    t.stat("lf/x")
    t.mk("ld/new", b"via link")
    t.ls("d")


@case()
def symlink_targets_kept_verbatim(t: T) -> None:
    t.mk("f", b"x")
    t.mkdir("sub")
    targets = {"root": "/", "abs": "/nonexistent/absolute", "dotdot": "sub/../f", "dot": "./f", "up": "../f"}
    targets |= {"slashes": "sub//", "space": "a b", "unicode": "é/€"}
    for name, target in targets.items():
        t.symlink(target, name)
    t.do("readlink all", lambda: [f"{name} -> {os.readlink(name)}" for name in targets])
    t.do("stat root: type", lambda: type_name(os.stat("root").st_mode))  # "/", from the caller's root
    t.read("dotdot")
    t.ls("slashes")


@case()
def symlink_ownership(t: T) -> None:
    t.mk("f")
    t.symlink("f", "l")
    t.lstat("l")
    t.chown("l", IDENTITIES[OTHER][0], IDENTITIES[OTHER][1], follow=False)
    t.chown("l", -1, SHARED_GID, follow=False)
    t.lstat("l")
    t.stat("l")
    t.chown("l", -1, SHARED_GID)
    t.stat("f")
    t.lstat("l")


@case()
def symlink_chmod_follows(t: T) -> None:
    t.mk("f")
    t.symlink("f", "l")
    t.chmod("l", 0o600)
    t.stat("f")
    t.lstat("l")


@case()
def symlink_utimes_nofollow(t: T) -> None:
    t.mk("f")
    t.symlink("f", "l")
    t.times("f")
    t.utime("l", (OLD, OLDER), follow=False)
    t.times_are("l", OLD, OLDER, follow=False)
    t.times("f")


@case()
def symlink_unlink_target(t: T) -> None:
    t.mk("f", b"x")
    t.symlink("f", "l")
    t.unlink("f")
    t.stat("l")
    t.mk("f", b"again")
    t.read("l")


# chmod ------------------------------------------------------------------------------------------


@case()
def chmod_by_owner(t: T) -> None:
    t.mk("f")
    for mode in (0o000, 0o777, 0o7777, 0o4755, 0o2755, 0o1644, 0o640):
        t.chmod("f", mode)
        t.stat("f")


@case()
def chmod_dir_by_owner(t: T) -> None:
    t.mkdir("d")
    for mode in (0o000, 0o7777, 0o2775, 0o1777, 0o700):
        t.chmod("d", mode)
        t.stat("d")


@case()
def chmod_by_non_owner(t: T) -> None:
    theirs = t.others_file()
    t.chmod(theirs, 0o777)
    t.stat(theirs)


@case()
def chmod_setgid_by_non_member(t: T) -> None:
    t.mk("f")
    t.give("f", t.user, gid=NOGROUP_GID)
    t.chmod("f", 0o2755)  # setgid on a file of a group the caller is not in is silently dropped
    t.stat("f")
    t.chmod("f", 0o6755)
    t.stat("f")


@case()
def chmod_setgid_by_member(t: T) -> None:
    t.mk("f")
    t.chown("f", -1, SHARED_GID)
    t.chmod("f", 0o2755)
    t.stat("f")


@case()
def chmod_updates_ctime_only(t: T) -> None:
    t.mk("f", b"x")
    t.times("f")
    t.chmod("f", 0o600)
    t.times("f")


@case()
def chmod_fchmod(t: T) -> None:
    fd = t.open("f", O_CREAT | O_WRONLY, 0o644)
    t.do("fchmod 0600", os.fchmod, fd, 0o600)
    t.fstat(fd)
    pfd = t.open("f", os.O_PATH)
    t.do("fchmod on O_PATH descriptor", os.fchmod, pfd, 0o644)
    t.close(fd)
    t.stat("f")


@case()
def chmod_missing(t: T) -> None:
    t.chmod("missing", 0o644)
    t.chmod("missing/x", 0o644)


@case()
def chmod_dir_zero_blocks_use(t: T) -> None:
    t.mkdir("d")
    t.mk("d/f", b"x")
    t.chmod("d", 0o000)
    t.ls("d")
    t.stat("d/f")
    t.mk("d/g")
    t.chmod("d", 0o755)


# chown ------------------------------------------------------------------------------------------


@case()
def chown_to_other_user(t: T) -> None:
    t.mk("f")
    uid, gid, _ = IDENTITIES[OTHER]
    t.chown("f", uid, gid)
    t.stat("f")
    t.chown("f", uid, -1)
    t.stat("f")


@case()
def chown_minus_one_keeps(t: T) -> None:
    t.mk("f")
    t.chown("f", -1, -1)
    t.stat("f")
    t.chown("f", t.uid, -1)
    t.stat("f")


@case()
def chown_group(t: T) -> None:
    t.mk("f")
    t.chown("f", -1, SHARED_GID)
    t.stat("f")
    t.chown("f", -1, NOGROUP_GID)
    t.stat("f")
    t.chown("f", -1, t.gid)
    t.stat("f")


@case()
def chown_others_file(t: T) -> None:
    theirs = t.others_file()
    t.chown(theirs, t.uid, -1)
    t.chown(theirs, -1, SHARED_GID)
    t.stat(theirs)


@case()
def chown_clears_setuid(t: T) -> None:
    for mode in (0o6755, 0o6745, 0o4700):
        name = f"f{mode:o}"
        t.mk(name, b"x", mode)
        t.chmod(name, mode)
        t.chown(name, -1, SHARED_GID)
        t.stat(name)


@case()
def chown_dir_keeps_setgid(t: T) -> None:
    t.mkdir("d")
    t.chmod("d", 0o2775)
    t.chown("d", -1, SHARED_GID)
    t.stat("d")


@case()
def chown_updates_ctime(t: T) -> None:
    t.mk("f")
    t.times("f")
    t.chown("f", -1, SHARED_GID)
    t.times("f")


@case()
def chown_fchown(t: T) -> None:
    fd = t.open("f", O_CREAT | O_WRONLY)
    t.do("fchown -1:shared", os.fchown, fd, -1, SHARED_GID)
    t.do("fchown other", os.fchown, fd, IDENTITIES[OTHER][0], -1)
    t.fstat(fd)
    t.close(fd)


# truncate ---------------------------------------------------------------------------------------


@case()
def truncate_grow_and_shrink(t: T) -> None:
    t.mk("f", b"abc")
    t.truncate("f", 10)
    t.stat("f")
    t.read("f")
    t.truncate("f", 2)
    t.read("f")
    t.truncate("f", 0)
    t.stat("f")
    t.truncate("f", 1 << 30)
    t.stat("f")


@case()
def truncate_ftruncate(t: T) -> None:
    fd = t.open("f", O_CREAT | O_RDWR)
    t.fwrite(fd, b"hello")
    t.do("ftruncate 8", os.ftruncate, fd, 8)
    t.pread(fd, 20, 0)
    t.do("ftruncate 1", os.ftruncate, fd, 1)
    t.fstat(fd)
    t.close(fd)
    fd = t.open("f", O_RDONLY)
    t.do("ftruncate on a read-only descriptor", os.ftruncate, fd, 0)
    t.close(fd)
    t.read("f")


@case()
def truncate_errors(t: T) -> None:
    t.mkdir("d")
    t.mk("f", b"x")
    t.truncate("d", 0)
    t.truncate("missing", 0)
    t.truncate("f", -1)
    t.truncate("f/", 0)
    t.symlink("f", "l")
    t.truncate("l", 5)
    t.stat("f")
    t.mkfifo("p")
    t.truncate("p", 0)
    fd = t.open("p", O_RDONLY | os.O_NONBLOCK | O_TRUNC)
    t.close(fd)


@case()
def truncate_permissions(t: T) -> None:
    t.mk("mine", b"12345", 0o444)
    t.truncate("mine", 1)
    fd = t.open("rw", O_CREAT | O_RDWR, 0o644)
    t.chmod("rw", 0o444)
    t.do("ftruncate through a writable descriptor", os.ftruncate, fd, 3)
    t.close(fd)
    t.stat("rw")
    theirs = t.others_file(mode=0o644)
    t.truncate(theirs, 1)
    writable = t.others_file("pub/writable", mode=0o666)
    t.truncate(writable, 1)
    t.stat(theirs)
    t.stat(writable)


@case()
def truncate_updates_times(t: T) -> None:
    t.mk("f", b"abcdef")
    t.times("f")
    t.truncate("f", 3)
    t.times("f")
    t.truncate("f", 9)
    t.times("f")


# privileges dropped by writes, truncation and chown ---------------------------------------------


@case()
def priv_write_clears_setuid(t: T) -> None:
    for mode in (0o4755, 0o2755, 0o6755, 0o2745, 0o4644):
        name = f"f{mode:o}"
        t.mk(name, b"x")
        t.chmod(name, mode)
        t.write(name, b"more", offset=1)
        t.stat(name)


@case()
def priv_truncate_clears_setuid(t: T) -> None:
    t.mk("f", b"xxxx")
    t.chmod("f", 0o6755)
    t.truncate("f", 1)
    t.stat("f")
    t.mk("g", b"xxxx")
    t.chmod("g", 0o4755)
    fd = t.open("g", O_WRONLY | O_TRUNC)
    t.close(fd)
    t.stat("g")


@case()
def priv_write_by_other_clears_setuid(t: T) -> None:
    t.pub()
    t.mk("pub/f", b"x")
    t.chmod("pub/f", 0o4777)
    with t.as_(OTHER):
        t.write("pub/f", b"y", offset=1)
    t.stat("pub/f")


# utimensat --------------------------------------------------------------------------------------


@case()
def utime_explicit(t: T) -> None:
    t.mk("f")
    t.times("f")
    t.utime("f", (OLD, OLDER))
    t.times_are("f", OLD, OLDER)
    t.times("f")


@case()
def utime_now(t: T) -> None:
    t.mk("f")
    t.utime("f", (OLD, OLD))
    t.times("f")
    t.utime("f")
    t.times("f")
    t.times_are("f", OLD, OLD)


@case()
def utime_omit(t: T) -> None:
    t.mk("f")
    t.utime("f", (OLD, OLD))
    t.times("f")
    t.do("utimensat OMIT, OLDER", utimensat, "f", "omit", OLDER)
    t.times_are("f", OLD, OLDER)
    t.do("utimensat OLDER, OMIT", utimensat, "f", OLDER, "omit")
    t.times_are("f", OLDER, OLDER)
    t.do("utimensat NOW, OMIT", utimensat, "f", "now", "omit")
    t.times_are("f", OLDER, OLDER)
    t.times("f")
    t.do("utimensat OMIT, OMIT", utimensat, "f", "omit", "omit")
    t.times("f")


@case()
def utime_by_non_owner(t: T) -> None:
    ro = t.others_file("pub/ro", 0o644)
    rw = t.others_file("pub/rw", 0o666)
    t.utime(ro, (OLD, OLD))
    t.utime(rw, (OLD, OLD))
    t.utime(ro)
    t.utime(rw)
    t.do("utimensat NOW, OMIT on pub/rw", utimensat, rw, "now", "omit")
    t.do("utimensat NOW, OMIT on pub/ro", utimensat, ro, "now", "omit")


@case()
def utime_owner_readonly_file(t: T) -> None:
    t.mk("f", b"", 0o444)
    t.utime("f", (OLD, OLD))
    t.times_are("f", OLD, OLD)
    t.utime("f")
    t.times_are("f", OLD, OLD)


@case()
def utime_futimens(t: T) -> None:
    fd = t.open("f", O_CREAT | O_WRONLY)
    t.do("futimens explicit", os.utime, fd, ns=(OLD, OLDER))
    t.times_are("f", OLD, OLDER)
    t.close(fd)


@case()
def utime_dir(t: T) -> None:
    t.mkdir("d")
    t.utime("d", (OLD, OLDER))
    t.times_are("d", OLD, OLDER)
    t.times("d")
    t.mk("d/f")
    t.times("d")


@case()
def utime_unusual_times(t: T) -> None:
    t.mk("f")
    for name, ns in (
        ("before 1970", -(10**18) - 1),
        ("after 2038", (1 << 32) * 10**9 + 5),
        ("odd ns", 1_234_567_890 * 10**9 + 999_999_999),
        ("epoch", 0),
    ):
        t.utime("f", (ns, ns))
        t.do(f"read back {name}", lambda ns=ns: os.stat("f").st_mtime_ns == ns and os.stat("f").st_atime_ns == ns)


@case()
def utime_missing(t: T) -> None:
    t.utime("missing", (OLD, OLD))
    t.utime("missing")


# times ------------------------------------------------------------------------------------------


@case()
def time_write_updates_mtime_ctime(t: T) -> None:
    t.mk("f", b"x")
    fd = t.open("f", O_WRONLY)
    t.times("f")
    t.fwrite(fd, b"y")
    t.times("f")
    t.close(fd)


@case()
def time_read_updates_atime(t: T) -> None:
    t.mk("f", b"some data")
    t.utime("f", (OLD, OLD))
    t.times("f")
    t.read("f")
    t.times("f")


@case()
def time_open_changes_nothing(t: T) -> None:
    t.mk("f", b"x")
    t.utime("f", (OLD, OLD))
    t.times("f")
    fd = t.open("f", O_RDWR)
    t.close(fd)
    t.times("f")
    t.stat("f")
    t.times("f")


@case()
def time_create_and_remove_update_parent(t: T) -> None:
    t.times(".")
    t.mk("f")
    t.times(".")
    t.mkdir("d")
    t.times(".")
    t.symlink("f", "l")
    t.times(".")
    t.mkfifo("p")
    t.times(".")
    t.rmdir("d")
    t.times(".")
    t.unlink("missing")
    t.times(".")


@case()
def time_readdir_updates_atime(t: T) -> None:
    t.mkdir("d")
    t.mk("d/f")
    t.utime("d", (OLD, OLD))
    t.times("d")
    t.ls("d")
    t.times("d")


@case()
def time_setxattr_updates_ctime(t: T) -> None:
    t.mk("f")
    t.times("f")
    t.do("setxattr user.a", os.setxattr, "f", "user.a", b"1")
    t.times("f")


# mknod: fifos, sockets --------------------------------------------------------------------------


@case()
def mknod_fifo(t: T) -> None:
    t.mkfifo("p", 0o640)
    t.lstat("p")
    t.mkfifo("p")
    t.ls()


@case()
def mknod_fifo_io(t: T) -> None:
    t.mkfifo("p", 0o600)
    t.open("p", O_WRONLY | os.O_NONBLOCK)  # no reader yet: ENXIO
    r = t.open("p", O_RDONLY | os.O_NONBLOCK)
    w = t.open("p", O_WRONLY | os.O_NONBLOCK)
    t.fwrite(w, b"through the pipe")
    t.do("read", os.read, r, 100)
    t.fstat(r)
    t.close(w)
    t.close(r)
    t.stat("p")


@case()
def mknod_fifo_unlink_and_rename(t: T) -> None:
    t.mkfifo("p")
    t.rename("p", "q")
    t.lstat("q")
    t.unlink("q")
    t.ls()


@case()
def mknod_socket_bind_and_connect(t: T) -> None:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.sockets += [server, client]
    server.settimeout(5)
    client.settimeout(5)
    t.do("bind s", server.bind, "s")  # relative: sun_path holds 108 bytes
    t.do("listen", server.listen, 1)
    t.lstat("s")
    t.do("connect s", client.connect, "s")

    def exchange() -> bytes:
        conn, _ = server.accept()
        try:
            client.sendall(b"ping")
            return conn.recv(10)
        finally:
            conn.close()

    t.do("accept and receive", exchange)
    again = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.sockets.append(again)
    t.do("bind s again", again.bind, "s")
    t.unlink("s")
    t.ls()


@case()
def mknod_datagram_socket(t: T) -> None:
    a = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    b = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    t.sockets += [a, b]
    a.settimeout(5)
    t.do("bind a", a.bind, "a")
    t.do("sendto a", b.sendto, b"dgram", "a")
    t.do("recv", a.recv, 10)
    t.lstat("a")


@case()
def mknod_regular_file(t: T) -> None:
    t.do("mknod r S_IFREG 0640", os.mknod, "r", stat.S_IFREG | 0o640)
    t.lstat("r")
    t.do("mknod p S_IFIFO 0600", os.mknod, "p", stat.S_IFIFO | 0o600)
    t.lstat("p")
    t.do("mknod r again", os.mknod, "r", stat.S_IFREG | 0o640)


@case(users=(USER,))
def mknod_device_by_user(t: T) -> None:
    t.do("mknod null S_IFCHR 1,3", os.mknod, "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    t.do("mknod blk S_IFBLK 7,0", os.mknod, "blk", stat.S_IFBLK | 0o666, os.makedev(7, 0))
    t.ls()


@case()
def mknod_in_readonly_dir(t: T) -> None:
    t.mkdir("ro")
    t.chmod("ro", 0o555)
    t.mkfifo("ro/p")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.sockets.append(s)
    t.do("bind ro/s", s.bind, "ro/s")
    t.chmod("ro", 0o755)
    t.ls("ro")


# sticky directories -----------------------------------------------------------------------------


def _sticky(t: T, owner: str = ROOT) -> str:
    """A 1777 directory owned by ``owner`` with a 0666 file of the other user in it."""
    t.mkdir("st")
    t.give("st", owner, mode=0o1777)
    with t.as_(OTHER):
        t.mk("st/theirs", b"theirs", 0o666)
        t.mkdir("st/theirdir", 0o777)
        t.chmod("st/theirdir", 0o777)
    return "st"


@case()
def sticky_other_cannot_unlink(t: T) -> None:
    _sticky(t)
    t.stat("st")
    t.unlink("st/theirs")
    t.ls("st")


@case()
def sticky_other_cannot_rename(t: T) -> None:
    _sticky(t)
    t.rename("st/theirs", "st/mine")
    t.rename("st/theirs", "taken")
    t.mk("st/mine2", b"mine")
    t.rename("st/mine2", "st/theirs", RENAME_EXCHANGE)
    t.rename("st/theirs", "st/new", RENAME_NOREPLACE)
    t.ls("st")


@case()
def sticky_cannot_replace_others_file(t: T) -> None:
    _sticky(t)
    t.mk("st/mine", b"mine")
    t.rename("st/mine", "st/theirs")
    t.read("st/theirs")


@case()
def sticky_cannot_rmdir_others_dir(t: T) -> None:
    _sticky(t)
    t.rmdir("st/theirdir")
    t.ls("st")


@case()
def sticky_own_files_removable(t: T) -> None:
    _sticky(t)
    t.mk("st/mine")
    t.rename("st/mine", "st/mine2")
    t.unlink("st/mine2")
    t.ls("st")


@case()
def sticky_dir_owner_removes_anything(t: T) -> None:
    _sticky(t, owner=t.user)
    t.unlink("st/theirs")
    t.rmdir("st/theirdir")
    t.ls("st")


@case()
def sticky_others_file_still_writable(t: T) -> None:
    _sticky(t)
    t.write("st/theirs", b"T", offset=0)
    t.read("st/theirs")
    t.link("st/theirs", "st/mylink")
    t.ls("st")


# setgid directories -----------------------------------------------------------------------------


def _sgid(t: T, group: int = SHARED_GID, mode: int = 0o2775) -> str:
    t.mkdir("g")
    t.give("g", t.user, gid=group, mode=mode)
    t.stat("g")
    return "g"


@case()
def sgid_new_file_takes_dir_group(t: T) -> None:
    _sgid(t)
    t.mk("g/f")
    t.stat("g/f")


@case()
def sgid_new_subdir_inherits(t: T) -> None:
    _sgid(t)
    t.mkdir("g/s", 0o755)
    t.stat("g/s")
    t.mkdir("g/s/deeper", 0o700)
    t.stat("g/s/deeper")


@case()
def sgid_fifo_symlink_socket(t: T) -> None:
    _sgid(t)
    t.mkfifo("g/p")
    t.lstat("g/p")
    t.symlink("p", "g/l")
    t.lstat("g/l")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    t.sockets.append(s)
    t.do("bind g/s", s.bind, "g/s")
    t.lstat("g/s")


@case()
def sgid_moved_in_keeps_group(t: T) -> None:
    _sgid(t)
    t.mk("f")
    t.mkdir("d")
    t.rename("f", "g/f")
    t.rename("d", "g/d")
    t.link("g/f", "g/f2")
    t.stat("g/f")
    t.stat("g/d")


@case()
def sgid_non_member_setgid_file(t: T) -> None:
    _sgid(t, group=NOGROUP_GID, mode=0o2777)
    fd = t.open("g/x", O_CREAT | O_WRONLY, 0o2755)
    t.close(fd)
    t.stat("g/x")
    fd = t.open("g/y", O_CREAT | O_WRONLY, 0o2745)
    t.close(fd)
    t.stat("g/y")
    t.mkdir("g/d", 0o755)
    t.stat("g/d")


@case()
def sgid_by_other_user(t: T) -> None:
    _sgid(t, mode=0o2777)
    with t.as_(OTHER):
        t.mk("g/theirs")
        t.mkdir("g/theirdir")
    t.stat("g/theirs")
    t.stat("g/theirdir")


# permission checks between users -----------------------------------------------------------------


def _dir_of_other(t: T, mode: int) -> str:
    t.mkdir("od")
    t.mk("od/f", b"inside", 0o644)
    t.give("od", OTHER, mode=mode)
    t.give("od/f", OTHER)
    return "od"


@case()
def perm_create_in_others_dir(t: T) -> None:
    _dir_of_other(t, 0o755)
    t.open("od/new", O_CREAT | O_WRONLY)
    t.mkdir("od/newdir")
    t.mkfifo("od/newfifo")
    t.symlink("x", "od/newlink")
    t.unlink("od/f")
    t.rename("od/f", "od/g")
    t.ls("od")


@case()
def perm_read_others_private_file(t: T) -> None:
    secret = t.others_file("pub/secret", 0o600, b"secret")
    t.read(secret)
    t.stat(secret)
    t.open(secret, O_WRONLY)


@case()
def perm_group_bits(t: T) -> None:
    t.pub()
    for mode in (0o640, 0o604, 0o460, 0o066, 0o006):
        name = f"pub/f{mode:03o}"
        with t.as_(OTHER):
            t.mk(name, b"g", 0o600)
        t.give(name, OTHER, gid=SHARED_GID, mode=mode)
        t.read(name)
        t.open(name, O_WRONLY)


@case()
def perm_owner_bits_take_precedence(t: T) -> None:
    t.mk("f", b"mine", 0o644)
    t.chmod("f", 0o066)
    t.read("f")
    t.open("f", O_WRONLY)


@case()
def perm_search_permission(t: T) -> None:
    for mode in (0o700, 0o744, 0o711, 0o733):
        d = f"od{mode:o}"
        t.mkdir(d)
        t.mk(f"{d}/f", b"inside")
        t.give(d, OTHER, mode=mode)
        t.ls(d)
        t.stat(f"{d}/f")
        t.read(f"{d}/f")
        t.open(f"{d}/new", O_CREAT | O_WRONLY)


@case()
def perm_chdir(t: T) -> None:
    for mode in (0o600, 0o100, 0o700):
        d = f"d{mode:o}"
        t.mkdir(d)
        t.give(d, OTHER, mode=mode)
        if t.do(f"chdir {d}", os.chdir, d) is not MISSING:
            t.do("chdir ..", os.chdir, "..")
    for mode in (0o001, 0o010):
        d = f"x{mode:o}"
        t.mkdir(d)
        t.give(d, OTHER, gid=SHARED_GID, mode=mode)
        if t.do(f"chdir {d}", os.chdir, d) is not MISSING:
            t.do("chdir ..", os.chdir, "..")


@case()
def perm_dir_without_search(t: T) -> None:
    t.mkdir("d")
    t.mk("d/f", b"x")
    t.chmod("d", 0o600)
    t.ls("d")
    t.stat("d/f")
    t.mk("d/g")
    t.chmod("d", 0o755)


@case()
def perm_access(t: T) -> None:
    for mode in (0o000, 0o644, 0o744, 0o755, 0o070, 0o007, 0o001):
        name = f"f{mode:03o}"
        t.mk(name, b"x", mode)
        t.chmod(name, mode)
        for flag, letter in ((os.R_OK, "r"), (os.W_OK, "w"), (os.X_OK, "x")):
            t.do(f"access {name} {letter}", os.access, name, flag)
    t.do("access missing", os.access, "missing", os.F_OK)


@case()
def perm_exec(t: T) -> None:
    t.mk("run", b"#!/bin/sh\nexit 7\n", 0o755)
    t.mk("noexec", b"#!/bin/sh\nexit 7\n", 0o644)

    def run(path: str) -> int:
        return subprocess.run([path], timeout=10, check=False).returncode

    t.do("exec ./run", run, "./run")
    t.do("exec ./noexec", run, "./noexec")
    fd = t.open("run", O_WRONLY)
    t.do("exec ./run while open for writing", run, "./run")
    t.close(fd)


@case()
def perm_others_without_sticky(t: T) -> None:
    t.pub()
    t.mk("pub/mine", b"mine", 0o600)
    with t.as_(OTHER):
        t.unlink("pub/mine")
        t.mk("pub/theirs", b"t", 0o600)
    t.rename("pub/theirs", "pub/now-mine")
    t.ls("pub")


@case()
def perm_supplementary_group(t: T) -> None:
    t.mk("f", b"grp")
    t.give("f", ROOT, gid=SHARED_GID, mode=0o660)
    t.write("f", b"G", offset=0)
    t.read("f")
    t.give("f", ROOT, gid=NOGROUP_GID, mode=0o660)
    t.read("f")


# unlinked files that are still open --------------------------------------------------------------


@case()
def unlinked_open_file(t: T) -> None:
    fd = t.open("f", O_CREAT | O_RDWR, 0o644)
    t.fwrite(fd, b"hello")
    t.unlink("f")
    t.fstat(fd)
    t.pwrite(fd, b"HE", 0)
    t.pread(fd, 10, 0)
    t.do("ftruncate 3", os.ftruncate, fd, 3)
    t.fstat(fd)
    t.do("fchmod 0600", os.fchmod, fd, 0o600)
    t.fstat(fd)
    t.ls()
    t.stat("f")
    t.close(fd)


@case()
def unlinked_two_descriptors(t: T) -> None:
    a = t.open("f", O_CREAT | O_RDWR)
    b = t.open("f", O_RDONLY)
    t.unlink("f")
    t.fwrite(a, b"shared after unlink")
    t.pread(b, 100, 0)
    t.close(a)
    t.pread(b, 6, 0)
    t.fstat(b)
    t.close(b)


@case()
def unlinked_with_another_link(t: T) -> None:
    t.mk("a", b"data")
    t.link("a", "b")
    fd = t.open("a", O_RDWR)
    t.unlink("a")
    t.fstat(fd)
    t.pwrite(fd, b"DATA", 0)
    t.read("b")
    t.close(fd)


@case()
def unlinked_name_reused(t: T) -> None:
    t.mk("f", b"old")
    fd = t.open("f", O_RDONLY)
    t.unlink("f")
    t.mk("f", b"new")
    t.pread(fd, 10, 0)
    t.read("f")
    t.do("new name is another inode", lambda fd: os.fstat(fd).st_ino != os.stat("f").st_ino, fd)
    t.close(fd)


@case()
def unlinked_metadata_calls(t: T) -> None:
    fd = t.open("f", O_CREAT | O_RDWR)
    t.unlink("f")
    t.do("futimens explicit", os.utime, fd, ns=(OLD, OLDER))
    t.do("times as set", lambda fd: (os.fstat(fd).st_atime_ns, os.fstat(fd).st_mtime_ns) == (OLD, OLDER), fd)
    t.do("fchown -1:shared", os.fchown, fd, -1, SHARED_GID)
    t.do("fsetxattr user.k", os.setxattr, fd, "user.k", b"v")
    t.do("fgetxattr user.k", os.getxattr, fd, "user.k")
    t.do("flistxattr", lambda fd: sorted(os.listxattr(fd)), fd)
    t.fstat(fd)
    t.close(fd)


@case()
def unlinked_many_then_listing(t: T) -> None:
    fds = [t.open(f"f{i}", O_CREAT | O_RDWR) for i in range(5)]
    for i, fd in enumerate(fds):
        t.fwrite(fd, f"file {i}".encode())
        t.unlink(f"f{i}")
    t.do("readdir (dots too)", lambda: [name for name, _, _ in readdir_raw(".")])
    t.mkdir("d")
    t.rmdir("d")
    for fd in fds:
        t.pread(fd, 10, 0)
        t.close(fd)
    t.rmdir(".")  # EINVAL, and the directory is empty: no leftovers


# xattrs -----------------------------------------------------------------------------------------


def _xattrs(path: str, follow: bool = True) -> list[str]:
    names = sorted(os.listxattr(path, follow_symlinks=follow))
    return [name if len(name) < 40 else f"<{len(name)}-byte name>" for name in names]


@case()
def xattr_set_get_list_remove(t: T) -> None:
    t.mk("f")
    t.do("list (none)", _xattrs, "f")
    t.do("set user.a", os.setxattr, "f", "user.a", b"alpha")
    t.do("set user.b", os.setxattr, "f", "user.b", b"beta")
    t.do("get user.a", os.getxattr, "f", "user.a")
    t.do("list", _xattrs, "f")
    t.do("set user.a again", os.setxattr, "f", "user.a", b"ALPHA!")
    t.do("get user.a", os.getxattr, "f", "user.a")
    t.do("remove user.a", os.removexattr, "f", "user.a")
    t.do("list", _xattrs, "f")
    t.do("get user.a", os.getxattr, "f", "user.a")


@case()
def xattr_missing_and_flags(t: T) -> None:
    t.mk("f")
    t.do("get user.none", os.getxattr, "f", "user.none")
    t.do("remove user.none", os.removexattr, "f", "user.none")
    t.do("set user.x CREATE", os.setxattr, "f", "user.x", b"1", os.XATTR_CREATE)
    t.do("set user.x CREATE again", os.setxattr, "f", "user.x", b"2", os.XATTR_CREATE)
    t.do("set user.y REPLACE", os.setxattr, "f", "user.y", b"3", os.XATTR_REPLACE)
    t.do("set user.x REPLACE", os.setxattr, "f", "user.x", b"4", os.XATTR_REPLACE)
    t.do("get user.x", os.getxattr, "f", "user.x")
    t.do("list", _xattrs, "f")
    t.do("get on missing file", os.getxattr, "missing", "user.x")


@case()
def xattr_values(t: T) -> None:
    t.mk("f")
    t.do("set empty", os.setxattr, "f", "user.empty", b"")
    t.do("get empty", os.getxattr, "f", "user.empty")
    t.do("set binary", os.setxattr, "f", "user.bin", bytes(range(256)))
    t.do("get binary", os.getxattr, "f", "user.bin")
    t.do("set 2000 bytes", os.setxattr, "f", "user.big", b"v" * 2000)
    t.do("get 2000 bytes", os.getxattr, "f", "user.big")
    t.do("set 65537 bytes", os.setxattr, "f", "user.huge", b"h" * 65537)
    t.do("set name of 256 bytes", os.setxattr, "f", "user." + "n" * 251, b"x")
    t.do("set name of 255 bytes", os.setxattr, "f", "user." + "n" * 250, b"x")
    t.do("set user. (empty name)", os.setxattr, "f", "user.", b"x")
    t.do("list", _xattrs, "f")


@case()
def xattr_many(t: T) -> None:
    t.mk("f")

    def set_all() -> None:
        for i in range(20):
            os.setxattr("f", f"user.k{i:02d}", str(i).encode())

    t.do("set 20", set_all)
    t.do("list", _xattrs, "f")
    t.do("get all", lambda: [os.getxattr("f", f"user.k{i:02d}") for i in range(20)])


@case()
def xattr_on_dir(t: T) -> None:
    t.mkdir("d")
    t.do("set user.d", os.setxattr, "d", "user.d", b"dir")
    t.do("get user.d", os.getxattr, "d", "user.d")
    t.do("list", _xattrs, "d")


@case()
def xattr_namespaces(t: T) -> None:
    t.mk("f")
    t.do("set trusted.t", os.setxattr, "f", "trusted.t", b"t")
    t.do("get trusted.t", os.getxattr, "f", "trusted.t")
    t.do("set foo.bar", os.setxattr, "f", "foo.bar", b"x")
    t.do("get foo.bar", os.getxattr, "f", "foo.bar")
    t.do("set nonamespace", os.setxattr, "f", "plain", b"x")
    t.do("list", _xattrs, "f")


@case()
def xattr_trusted_hidden_from_users(t: T) -> None:
    t.mk("f")
    t.do("set user.u", os.setxattr, "f", "user.u", b"u")
    with t.as_(ROOT):
        t.do("set trusted.t", os.setxattr, "f", "trusted.t", b"t")
    t.do("list", _xattrs, "f")
    t.do("get trusted.t", os.getxattr, "f", "trusted.t")
    t.do("remove trusted.t", os.removexattr, "f", "trusted.t")


@case()
def xattr_special_files(t: T) -> None:
    t.mk("f")
    t.symlink("f", "l")
    t.mkfifo("p")
    t.do("lsetxattr user.x on symlink", os.setxattr, "l", "user.x", b"1", follow_symlinks=False)
    t.do("lgetxattr user.x on symlink", os.getxattr, "l", "user.x", follow_symlinks=False)
    t.do("llistxattr on symlink", _xattrs, "l", False)
    t.do("setxattr through symlink", os.setxattr, "l", "user.y", b"2")
    t.do("list f", _xattrs, "f")
    t.do("setxattr user.x on fifo", os.setxattr, "p", "user.x", b"1")
    t.do("getxattr user.x on fifo", os.getxattr, "p", "user.x")


@case()
def xattr_permissions(t: T) -> None:
    ro = t.others_file("pub/ro", 0o644)
    secret = t.others_file("pub/secret", 0o600)
    rw = t.others_file("pub/rw", 0o666)
    with t.as_(OTHER):
        for path in (ro, secret, rw):
            t.do(f"set user.o on {path}", os.setxattr, path, "user.o", b"o")
    t.do("get user.o on pub/ro", os.getxattr, ro, "user.o")
    t.do("get user.o on pub/secret", os.getxattr, secret, "user.o")
    t.do("list pub/secret", _xattrs, secret)
    t.do("set user.m on pub/ro", os.setxattr, ro, "user.m", b"m")
    t.do("set user.m on pub/rw", os.setxattr, rw, "user.m", b"m")
    t.do("remove user.o on pub/ro", os.removexattr, ro, "user.o")
    t.do("list pub/rw", _xattrs, rw)


@case()
def xattr_sticky_dir_of_other(t: T) -> None:
    t.mkdir("st")
    t.give("st", OTHER, mode=0o1777)
    t.do("set user.x on a sticky dir of another", os.setxattr, "st", "user.x", b"1")
    t.do("list", _xattrs, "st")


@case()
def xattr_follow_links_and_renames(t: T) -> None:
    t.mk("a")
    t.link("a", "b")
    t.do("set user.shared via a", os.setxattr, "a", "user.shared", b"both")
    t.do("get via b", os.getxattr, "b", "user.shared")
    t.rename("a", "c")
    t.do("get via c", os.getxattr, "c", "user.shared")
    fd = t.open("c", O_RDONLY)
    t.do("fgetxattr", os.getxattr, fd, "user.shared")
    t.do("fsetxattr on a read-only descriptor", os.setxattr, fd, "user.fd", b"fd")
    t.do("get via b", os.getxattr, "b", "user.fd")
    t.close(fd)


# name lengths and characters --------------------------------------------------------------------

N255, N256 = "n" * 255, "n" * 256


@case()
def name_255_bytes(t: T) -> None:
    t.mk(N255, b"long")
    t.stat(N255, label="stat <255 n>")
    t.read(N255, label="read <255 n>")
    t.do("ls", lambda: [len(n) for n in os.listdir(".")])
    t.do("rename <255 n> -> <255 m>", os.rename, N255, "m" * 255)
    t.do("mkdir <255 d>", os.mkdir, "d" * 255)
    t.do("symlink <255 l> -> <255 m>", os.symlink, "m" * 255, "l" * 255)
    t.do("readlink <255 l>", lambda: len(os.readlink("l" * 255)))
    t.do("link <255 m> -> <255 h>", os.link, "m" * 255, "h" * 255)
    t.do("ls", lambda: sorted(n[0] + str(len(n)) for n in os.listdir(".")))
    t.do("unlink <255 m>", os.unlink, "m" * 255)


@case()
def name_256_bytes(t: T) -> None:
    t.mk("f")
    t.mkdir("d")
    t.do("create <256>", os.open, N256, O_CREAT | O_WRONLY, 0o644)
    t.do("stat <256>", os.stat, N256)
    t.do("mkdir <256>", os.mkdir, N256)
    t.do("symlink <256> -> f", os.symlink, "f", N256)
    t.do("link f -> <256>", os.link, "f", N256)
    t.do("rename f -> <256>", os.rename, "f", N256)
    t.do("mkfifo <256>", os.mkfifo, N256)
    t.do("unlink <256>", os.unlink, N256)
    t.do("rmdir <256>", os.rmdir, N256)
    t.do("stat <256>/f", os.stat, N256 + "/f")
    t.do("create d/<256>", os.open, "d/" + N256, O_CREAT | O_WRONLY, 0o644)
    t.ls()


@case()
def name_multibyte(t: T) -> None:
    ok, too_long = "€" * 85, "€" * 86  # 255 and 258 bytes
    t.do("create <85 €>", lambda: os.close(os.open(ok, O_CREAT | O_WRONLY, 0o644)))
    t.do("create <86 €>", os.open, too_long, O_CREAT | O_WRONLY, 0o644)
    t.do("ls", lambda: [len(os.fsencode(n)) for n in os.listdir(".")])


# deep paths -------------------------------------------------------------------------------------


@case()
def deep_beyond_path_max(t: T) -> None:
    names = [f"{i:02d}" + "d" * 198 for i in range(25)]  # 25 x 201 bytes: 5000 bytes from here

    def build() -> int:
        fd = os.open(".", O_RDONLY | O_DIRECTORY)
        for name in names:
            os.mkdir(name, 0o755, dir_fd=fd)
            child = os.open(name, O_RDONLY | O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        return fd

    fd = t.quiet("mkdir 25 levels of 200-byte names via dir fds", build)
    if isinstance(fd, int):
        t.fds.append(fd)
    t.do("create f at the bottom", lambda fd: os.close(os.open("f", O_CREAT | O_WRONLY, 0o600, dir_fd=fd)), fd)
    t.do("write and read back", _write_read_at, fd, "f")
    t.do("stat f", os.stat, "f", dir_fd=fd)
    t.do("symlink l -> f", os.symlink, "f", "l", dir_fd=fd)
    t.do("readlink l", os.readlink, "l", dir_fd=fd)
    t.do("link f -> g", os.link, "f", "g", src_dir_fd=fd, dst_dir_fd=fd)
    t.do("rename g -> h", os.rename, "g", "h", src_dir_fd=fd, dst_dir_fd=fd)
    t.do("mkdir sub", os.mkdir, "sub", dir_fd=fd)
    t.do("ls", lambda fd: sorted(os.listdir(fd)), fd)
    t.do("stat the whole relative path", os.stat, "/".join([*names, "f"]))

    def walk_down() -> bytes:
        for name in names:
            os.chdir(name)
        with open("f", "rb") as f:
            return f.read()

    t.do("chdir down step by step, read f", walk_down)
    t.do("stat .. from the bottom", lambda: type_name(os.stat("..").st_mode))

    def remove(fd: int) -> None:
        os.chdir(fd)
        for name in ("f", "h", "l"):
            os.unlink(name)
        os.rmdir("sub")
        for name in reversed(names):
            os.chdir("..")
            os.rmdir(name)

    t.do("remove everything bottom-up", remove, fd)


def _write_read_at(dir_fd: int, name: str) -> bytes:
    fd = os.open(name, O_RDWR, dir_fd=dir_fd)
    try:
        os.write(fd, b"deep data")
        return os.pread(fd, 100, 0)
    finally:
        os.close(fd)


@case()
def deep_path_max_boundary(t: T) -> None:
    dirs = ["d" * 254 + chr(ord("a") + i) for i in range(15)]  # 15 x 256 bytes, slashes included

    def build() -> None:
        for i in range(len(dirs)):
            os.mkdir("/".join(dirs[: i + 1]))

    t.do("mkdir 15 levels of 255-byte names", build)
    path = "/".join(dirs) + "/" + "f" * 255  # 4095 bytes: the longest path
    t.do("create a file by a 4095-byte path", lambda: os.close(os.open(path, O_CREAT | O_WRONLY, 0o644)))
    t.do("stat it", os.stat, path)
    t.do("stat by a 4096-byte path", os.stat, "/".join(dirs) + "//" + "f" * 255)
    t.do("create by a 4096-byte path", os.open, "/".join(dirs) + "/" + "g" * 256, O_CREAT | O_WRONLY, 0o644)


# statvfs ----------------------------------------------------------------------------------------


@case()
def statvfs_sanity(t: T) -> None:
    t.mk("f")

    def summary(target: object) -> str:
        s = os.statvfs(target)  # type: ignore[arg-type]
        checks = {
            "bsize>0": s.f_bsize > 0,
            "frsize>0": s.f_frsize > 0,
            "blocks>0": s.f_blocks > 0,
            "bfree<=blocks": s.f_bfree <= s.f_blocks,
            "bavail<=bfree": s.f_bavail <= s.f_bfree,
            "ffree<=files": s.f_ffree <= s.f_files,
        }
        return " ".join(f"{k}:{v}" for k, v in checks.items()) + f" namemax={s.f_namemax}"

    t.do("statvfs .", summary, ".")
    t.do("statvfs f", summary, "f")
    fd = t.open("f", O_RDONLY)
    t.do("fstatvfs", summary, fd)
    t.close(fd)
    t.do("statvfs missing", os.statvfs, "missing")


# O_TMPFILE --------------------------------------------------------------------------------------

TMPFILE_XFAIL = "O_TMPFILE is not available through pyfuse3 (no tmpfile handler): the mount answers EOPNOTSUPP"


@case(xfail=TMPFILE_XFAIL)
def tmpfile_link_into_place(t: T) -> None:
    fd = t.open(".", os.O_TMPFILE | O_RDWR, 0o600)
    t.fwrite(fd, b"anonymous")
    t.fstat(fd)
    t.ls()
    t.do("linkat /proc/self/fd -> named", lambda fd: linkat(f"/proc/self/fd/{fd}", "named", follow=True), fd)
    t.stat("named")
    t.read("named")
    t.close(fd)


@case(xfail=TMPFILE_XFAIL)
def tmpfile_excl_cannot_be_linked(t: T) -> None:
    fd = t.open(".", os.O_TMPFILE | O_RDWR | O_EXCL, 0o600)
    t.do("linkat /proc/self/fd -> named", lambda fd: linkat(f"/proc/self/fd/{fd}", "named", follow=True), fd)
    t.ls()
    t.close(fd)


# ownership on a mount with uid= (the "sec" cases run on their own mount) -----------------------------


def _sec(fn: Callable[[T], None]) -> Callable[[T], None]:
    return case()(fn)


@_sec
def sec_files_belong_to_their_creator(t: T) -> None:
    t.mk("f")
    t.mkdir("d")
    t.mkfifo("p")
    t.symlink("f", "l")
    for path in ("f", "d", "p", "l"):
        t.lstat(path)


@_sec
def sec_setuid_file_belongs_to_its_creator(t: T) -> None:
    fd = t.open("suid", O_CREAT | O_WRONLY, 0o4755)
    t.close(fd)
    t.stat("suid")
    t.mk("sgid", b"", 0o2755)
    t.stat("sgid")
    t.chown("suid", 0, 0)
    t.stat("suid")


@_sec
def sec_other_users_files_are_theirs(t: T) -> None:
    theirs = t.others_file(mode=0o644)
    t.stat(theirs)
    t.chmod(theirs, 0o4777)
    t.chown(theirs, t.uid, t.gid)
    t.write(theirs, b"x", offset=0)
    t.stat(theirs)
    with t.as_(OTHER):
        fd = t.open("pub/their-suid", O_CREAT | O_WRONLY, 0o4755)
        t.close(fd)
    t.stat("pub/their-suid")


@_sec
def sec_root_files_are_roots(t: T) -> None:
    t.pub()
    with t.as_(ROOT):
        t.mk("pub/roots", b"r", 0o4755)
        t.mkdir("pub/rootdir", 0o755)
    t.stat("pub/roots")
    t.stat("pub/rootdir")
    t.chmod("pub/roots", 0o777)
    t.mk("pub/rootdir/f")


# -- the runner -----------------------------------------------------------------------------------


def run_case(c: Case, base: str, user: str) -> list[list[object]]:
    t = T(user)
    os.chdir(os.path.join(base, f"{c.name}-{user}"))
    os.umask(0o022)
    try:
        with t.as_(user):
            c.fn(t)
    except Exception as exc:  # a bug in the case, not an observation: the self-test refuses these
        t.steps.append(["!runner-error", f"{type(exc).__name__}: {exc}"])
    finally:
        for fd in t.fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        for s in t.sockets:
            s.close()
        os.umask(0o022)
        os.chdir("/")
    return t.steps


def main(argv: list[str]) -> int:
    base, user, *names = argv
    assert os.geteuid() == 0, "the runner starts as root and takes the user's identity itself"
    for name in names:
        steps = run_case(CASES[name], base, user)
        print(json.dumps({"case": name, "steps": steps}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
