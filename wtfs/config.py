"""Session specs: TOML (or JSON) files and ``-o`` options, loaded into frozen dataclasses.

Every fault is reported as one ``SpecError`` naming the file, the key and what is wrong, before
anything is mounted.
"""

from __future__ import annotations

import functools
import grp
import json
import os
import pwd
import re
import tomllib
from dataclasses import MISSING, Field, dataclass, field, fields, replace
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .errors import SpecError
from .units import parse_duration, parse_size

NAME_RE = re.compile(r"^[A-Za-z0-9._-]+$")
SHA256_RE = re.compile(r"^[0-9a-fA-F]{64}$")

#: URL schemes of entries and whether their provider exists in this build.
SUPPORTED_SCHEMES = {"http", "https", "file", "local", ""}
KNOWN_SCHEMES = SUPPORTED_SCHEMES | {"globus"}


# ---------------------------------------------------------------------------------------------
# keys: a field is filled from the spec key of its name unless its metadata says otherwise

#: Not read from the spec (filled by the loader or the command line).
_NOT_IN_SPEC: dict[str, Any] = {"key": None}
#: A spec key that no ``-o key=value`` sets: lists, and the mountpoint (the command line's).
_NOT_AN_OPTION: dict[str, Any] = {"option": False}


def _spelled(key: str) -> dict[str, Any]:
    """The spec spells this field's key otherwise (the references' camelCase)."""
    return {"key": key}


def _section(cls: type) -> dict[str, Any]:
    """A ``[table]`` of its own, filling ``cls``; ``-o table.key=value`` sets one of its keys."""
    return {"section": cls, "option": False}


def _inline(cls: type) -> dict[str, Any]:
    """``cls``'s keys sit in this field's table, beside its own."""
    return {"inline": cls}


@dataclass(frozen=True)
class CacheSettings:
    capacity: int = 10 * 1024**3
    gc_interval: float = 600.0
    gc_start_fraction: float = 0.8
    gc_end_fraction: float = 0.6


@dataclass(frozen=True)
class Secrets:
    """Where a secret comes from: an env var name or a file; never the secret itself."""

    api_key_env: str | None = None
    api_key_file: Path | None = None
    token_file: Path | None = None


@dataclass(frozen=True)
class GirderSettings:
    api_url: str
    secrets: Secrets = field(default=Secrets(), metadata=_inline(Secrets))


@dataclass(frozen=True)
class GlobusSettings:
    local_endpoint: str
    staging_path: str
    staging_dir: Path
    client_id_env: str | None = None
    client_secret_env: str | None = None
    refresh_token_file: Path | None = None


@dataclass(frozen=True)
class WholeTaleSettings:
    api_url: str
    secrets: Secrets = field(default=Secrets(), metadata=_inline(Secrets))
    session_id: str | None = None
    tale_id: str | None = None
    #: read the server's copy in place (``dm.psPath``) where this host sees its private storage;
    #: false: always download it into the host cache (e.g. storage on a slow network filesystem)
    private_storage: bool = True


@dataclass(frozen=True)
class PublishSettings:
    """``[publish]``: where every run that ends publishes its ``workspace/`` (as ``<run name>``)."""

    folder_id: str | None = None
    collection: str | None = None
    folder_path: str | None = None


@dataclass(frozen=True)
class Entry:
    """One ``[[dataset]]`` entry: where it mounts and where its bytes come from."""

    index: int = field(metadata=_NOT_IN_SPEC)
    mount_path: str = field(metadata=_spelled("mountPath"))
    url: str | None = None
    item_id: str | None = field(default=None, metadata=_spelled("itemId"))
    folder_id: str | None = field(default=None, metadata=_spelled("folderId"))
    size: int | None = None
    sha256: str | None = None
    #: serve reads before the copy lands (overrides the spec's ``stream``)
    stream: bool | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme.lower() if self.url else ""

    @property
    def is_file_kind(self) -> bool:
        """True where the entry is known to be a file before looking at it."""
        return self.scheme in {"http", "https", "globus"}


@dataclass(frozen=True)
class MountOptions:
    allow_other: bool = False
    allow_root: bool = False  # like allow_other, but only root besides the mount's owner
    ro: bool = False
    auto_unmount: bool = False
    debug: bool = False  # log debug messages and libfuse's trace of each request
    uid: int | None = None
    gid: int | None = None
    umask: int | None = None
    fsname: str | None = None  # the mount's source in the mount table; default: the spec's path
    suid: bool = False  # honour set-user-ID bits (-o suid); off, as for any FUSE mount, unless asked
    dev: bool = False  # honour device files (-o dev)


@dataclass(frozen=True)
class Spec:
    path: Path = field(metadata=_NOT_IN_SPEC)
    name: str
    workspace: Path | None
    state_dir: Path
    mountpoint: Path | None = field(metadata=_NOT_AN_OPTION)
    cache_dir: Path
    stall_timeout: float = 60.0
    metadata_ttl: float = 60.0
    #: a group whose members' daemons share this cache: directories 0750, files 0640 with it
    cache_group: str | None = None
    #: parallel ranged streams per large transfer where the origin supports Range
    streams: int = 1
    #: reads in data/ answered as soon as their range has landed, before the whole copy
    stream: bool = False
    #: on a directory's first listing, prefetch up to this many of its files (0: off)
    prefetch_dir: int = 0
    #: after two opens in a row of successive files of a data/ directory, land this many of the
    #: small files that follow ahead of the reader (0: off)
    readahead_files: int = 8
    cache: CacheSettings = field(default=CacheSettings(), metadata=_section(CacheSettings))
    girder: GirderSettings | None = field(default=None, metadata=_section(GirderSettings))
    globus: GlobusSettings | None = field(default=None, metadata=_section(GlobusSettings))
    wholetale: WholeTaleSettings | None = field(default=None, metadata=_section(WholeTaleSettings))
    publish: PublishSettings | None = field(default=None, metadata=_section(PublishSettings))
    dataset: tuple[Entry, ...] = field(default=(), metadata={"also": ("dataSet",), "option": False})
    #: where a Girder item's local meta.phys_path may point
    local_roots: tuple[Path, ...] = field(default=(), metadata=_NOT_AN_OPTION)
    mount: MountOptions = field(default_factory=MountOptions, metadata=_NOT_IN_SPEC)
    #: the -o options given, so a CLI can reload the same spec
    options: tuple[str, ...] = field(default=(), metadata=_NOT_IN_SPEC)


def _key(f: Field[Any]) -> str | None:
    key: str | None = f.metadata.get("key", f.name)
    return key


@functools.cache
def spec_keys(cls: type) -> frozenset[str]:
    """Every key a spec table filling ``cls`` may hold, so a new field is a new key."""
    keys: set[str] = set()
    for f in fields(cls):
        if "inline" in f.metadata:
            keys |= spec_keys(f.metadata["inline"])
        elif (key := _key(f)) is not None:
            keys |= {key, *f.metadata.get("also", ())}
    return frozenset(keys)


def _required_keys(cls: type) -> list[str]:
    """The keys of fields without a default, in their order."""
    required = (f for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING)
    return [key for f in required if (key := _key(f)) is not None]


#: ``[section]`` name -> the dataclass it fills.
_SECTIONS: dict[str, type] = {f.name: f.metadata["section"] for f in fields(Spec) if "section" in f.metadata}
#: Top-level keys that ``-o key=value`` may set.
_OPTION_KEYS = {key for f in fields(Spec) if (key := _key(f)) is not None and f.metadata.get("option", True)}
#: Boolean top-level keys: a bare ``-o key`` means ``key=true``.
_BOOLEAN_OPTION_KEYS = {key for f in fields(Spec) if isinstance(f.default, bool) and (key := _key(f)) in _OPTION_KEYS}

#: fstab/mount(8) options accepted and ignored, as sshfs and rclone do.
IGNORED_OPTIONS = {
    "_netdev", "nofail", "noauto", "auto", "user", "users", "nouser", "owner", "group", "rw", "defaults",
    "exec", "noexec", "atime", "noatime", "relatime", "strictatime", "lazytime", "async", "sync",
    "default_permissions",  # always in effect: the kernel checks permissions
}  # fmt: skip
IGNORED_OPTION_PREFIXES = ("x-systemd.", "x-", "comment=")
_MOUNT_FLAGS = {f.name for f in fields(MountOptions) if isinstance(f.default, bool)}
#: ``noX`` turns flag X off again; the last of ``suid``/``nosuid`` given wins, as in mount(8).
_NEGATED_FLAGS = {"nosuid": "suid", "nodev": "dev"}
#: ``key=value`` mount options: uid/gid (a number or a name), umask (octal), fsname (text).
_MOUNT_VALUES = {f.name for f in fields(MountOptions)} - _MOUNT_FLAGS
#: The largest valid uid/gid: (uid_t)-1 means "no change" to the kernel.
MAX_ID = 2**32 - 2


def default_cache_dir() -> Path:
    if os.geteuid() == 0:
        return Path("/var/cache/wtfs")
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "wtfs"


def default_state_dir(name: str, workspace: Path | None) -> Path:
    """Beside the workspace (same filesystem, so versions can hard-link), else per user."""
    if workspace is not None:
        return workspace.parent / ".wtfs-state" / name
    if os.geteuid() == 0:
        return Path("/var/lib/wtfs") / name
    base = Path(os.environ.get("XDG_STATE_HOME", Path.home() / ".local" / "state"))
    return base / "wtfs" / name


# ---------------------------------------------------------------------------------------------
# loading


def load_spec(path: str | os.PathLike[str], options: list[str] | tuple[str, ...] = ()) -> Spec:
    """Read, validate and resolve a spec file plus ``-o`` options."""
    spec_path = Path(path)
    where = str(spec_path)
    raw = _read(spec_path)
    overrides, mount = parse_options(options)
    for key, value in overrides.items():
        section, _, sub = key.rpartition(".")
        target = raw.setdefault(section, {}) if section else raw
        if not isinstance(target, dict):
            raise SpecError("-o", key, f"[{section}] is not a table in {where}")
        target[sub] = value
    spec = _Loader(spec_path.resolve().parent, where).spec(raw, spec_path.resolve())
    return replace(spec, mount=mount, options=tuple(options))


def _read(path: Path) -> dict[str, Any]:
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(where, "", "no such spec file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(where, "", f"cannot read: {exc}") from None
    try:
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (ValueError, tomllib.TOMLDecodeError) as exc:
        kind = "JSON" if path.suffix.lower() == ".json" else "TOML"
        raise SpecError(where, "", f"not valid {kind}: {exc}") from None
    if not isinstance(data, dict):
        raise SpecError(where, "", "the spec must be a table of keys")
    return data


def parse_options(options: list[str] | tuple[str, ...]) -> tuple[dict[str, Any], MountOptions]:
    """Split ``-o`` options into spec overrides and mount options; refuse unknown ones."""
    overrides: dict[str, Any] = {}
    flags: dict[str, Any] = {}
    for group in options:
        for item in filter(None, (part.strip() for part in group.split(","))):
            key, eq, value = item.partition("=")
            if key in IGNORED_OPTIONS or key.startswith(IGNORED_OPTION_PREFIXES):
                continue
            if key in _MOUNT_FLAGS and not eq:
                flags[key] = True
            elif key in _NEGATED_FLAGS and not eq:
                flags[_NEGATED_FLAGS[key]] = False
            elif key in _MOUNT_VALUES and eq:
                flags[key] = _value_option(key, value)
            elif key in spec_keys(CacheSettings) and eq:
                overrides[f"cache.{key}"] = value
            elif key == "local_roots":
                raise SpecError("-o", key, "is a list: give it in the spec file")
            elif key in _BOOLEAN_OPTION_KEYS and not eq:
                overrides[key] = "true"
            elif key in _OPTION_KEYS:
                if not eq:
                    raise SpecError("-o", key, "needs a value (key=value)")
                overrides[key] = value
            elif "." in key and eq and _is_section_key(key):
                overrides[key] = value
            else:
                raise SpecError("-o", key, "unknown option")
    if flags.get("allow_other") and flags.get("allow_root"):
        raise SpecError("-o", "allow_root", "give allow_other or allow_root, not both")
    return overrides, MountOptions(**flags)


def _value_option(key: str, value: str) -> int | str:
    if key in ("uid", "gid"):
        return _id_option(key, value)
    if key == "fsname":
        if not value:
            raise SpecError("-o", key, "must not be empty")
        return value
    try:
        mask = int(value, 8)
    except ValueError:
        mask = -1
    if not 0 <= mask <= 0o777:
        raise SpecError("-o", key, f"{value!r} is not an octal mask (000 to 777)")
    return mask


def _id_option(key: str, value: str) -> int:
    """A uid/gid as a number or as a user/group name, as fstab lines give them."""
    kind = "user" if key == "uid" else "group"
    if re.fullmatch(r"[+-]?\d+", value):
        number = int(value)
        if not 0 <= number <= MAX_ID:
            raise SpecError("-o", key, f"{value} is not a {kind} id (0 to {MAX_ID}) or name")
        return number
    try:
        return pwd.getpwnam(value).pw_uid if key == "uid" else grp.getgrnam(value).gr_gid
    except KeyError:
        raise SpecError("-o", key, f"no such {kind}: {value!r}") from None


_BOOLEAN_WORDS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


def _is_section_key(key: str) -> bool:
    section, _, sub = key.partition(".")
    return section in _SECTIONS and sub in spec_keys(_SECTIONS[section])


class _Loader:
    """Validates one raw spec table; every error names ``where`` and the key."""

    def __init__(self, base: Path, where: str) -> None:
        self.base = base
        self.where = where

    def fail(self, key: str, fault: str) -> SpecError:
        return SpecError(self.where, key, fault)

    def spec(self, raw: dict[str, Any], spec_path: Path) -> Spec:
        self.unknown(raw, Spec, "")
        name = self.string(raw, "name", "", default=spec_path.stem)
        if not NAME_RE.match(name):
            raise self.fail("name", f"{name!r} is not a valid name ([A-Za-z0-9._-]+)")
        workspace = self.path(raw, "workspace", "")
        state_dir = self.path(raw, "state_dir", "") or default_state_dir(name, workspace)
        cache_dir = self.path(raw, "cache_dir", "") or default_cache_dir()
        if "dataset" in raw and "dataSet" in raw:
            raise self.fail("dataSet", "give either dataset or dataSet, not both")
        entries = self.entries(raw.get("dataset", raw.get("dataSet", [])))
        spec = Spec(
            path=spec_path,
            name=name,
            workspace=workspace,
            state_dir=state_dir,
            mountpoint=self.path(raw, "mountpoint", ""),
            cache_dir=cache_dir,
            stall_timeout=self.duration(raw, "stall_timeout", "", 60.0),
            metadata_ttl=self.duration(raw, "metadata_ttl", "", 60.0),
            cache_group=self.string(raw, "cache_group", ""),
            streams=self.integer(raw, "streams", "", 1, low=1, high=64),
            stream=self.boolean(raw, "stream", "", False),
            prefetch_dir=self.integer(raw, "prefetch_dir", "", 0, low=0, high=10_000),
            readahead_files=self.integer(raw, "readahead_files", "", 8, low=0, high=1_000),
            cache=self.cache(self.table(raw, "cache")),
            girder=self.girder(self.table(raw, "girder")),
            globus=self.globus(self.table(raw, "globus")),
            wholetale=self.wholetale(self.table(raw, "wholetale")),
            publish=self.publish(self.table(raw, "publish")),
            dataset=entries,
            local_roots=self.roots(raw),
        )
        self.check_providers(spec)
        self.check_publish(spec)
        return spec

    # -- sections ---------------------------------------------------------------------------

    def roots(self, raw: dict[str, Any]) -> tuple[Path, ...]:
        """``local_roots``: existing directories, resolved, so containment checks compare real paths."""
        value = raw.get("local_roots", [])
        if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
            raise self.fail("local_roots", "must be a list of directory paths")
        roots = tuple((self.base / os.path.expanduser(item)).resolve() for item in value)
        for root in roots:
            if not root.is_dir():
                raise self.fail("local_roots", f"{root}: not a directory")
        return roots

    def cache(self, raw: dict[str, Any] | None) -> CacheSettings:
        raw = raw or {}
        self.unknown(raw, CacheSettings, "cache.")
        defaults = CacheSettings()
        try:
            capacity = parse_size(raw.get("capacity", defaults.capacity))
        except ValueError as exc:
            raise self.fail("cache.capacity", str(exc)) from None
        start = self.fraction(raw, "gc_start_fraction", defaults.gc_start_fraction)
        end = self.fraction(raw, "gc_end_fraction", defaults.gc_end_fraction)
        if end > start:
            raise self.fail("cache.gc_end_fraction", "must not be above gc_start_fraction")
        interval = self.duration(raw, "gc_interval", "cache.", defaults.gc_interval)
        return CacheSettings(capacity, interval, start, end)

    def secrets(self, raw: dict[str, Any], prefix: str) -> Secrets:
        if spec_keys(Secrets).isdisjoint(raw):
            raise self.fail(prefix + "api_key_env", "one of api_key_env, api_key_file, token_file is needed")
        return Secrets(
            api_key_env=self.string(raw, "api_key_env", prefix),
            api_key_file=self.path(raw, "api_key_file", prefix),
            token_file=self.path(raw, "token_file", prefix),
        )

    def girder(self, raw: dict[str, Any] | None) -> GirderSettings | None:
        if raw is None:
            return None
        self.unknown(raw, GirderSettings, "girder.")
        return GirderSettings(self.url(raw, "api_url", "girder."), self.secrets(raw, "girder."))

    def wholetale(self, raw: dict[str, Any] | None) -> WholeTaleSettings | None:
        if raw is None:
            return None
        self.unknown(raw, WholeTaleSettings, "wholetale.")
        return WholeTaleSettings(
            api_url=self.url(raw, "api_url", "wholetale."),
            secrets=self.secrets(raw, "wholetale."),
            session_id=self.string(raw, "session_id", "wholetale."),
            tale_id=self.string(raw, "tale_id", "wholetale."),
            private_storage=self.boolean(raw, "private_storage", "wholetale.", True),
        )

    def publish(self, raw: dict[str, Any] | None) -> PublishSettings | None:
        if raw is None:
            return None
        self.unknown(raw, PublishSettings, "publish.")
        settings = PublishSettings(
            folder_id=self.string(raw, "folder_id", "publish."),
            collection=self.string(raw, "collection", "publish."),
            folder_path=self.string(raw, "folder_path", "publish."),
        )
        if (settings.folder_id is None) == (settings.collection is None):
            raise self.fail("publish.folder_id", "give exactly one of folder_id, collection")
        if settings.folder_path is not None and settings.collection is None:
            raise self.fail("publish.folder_path", "needs collection")
        return settings

    def globus(self, raw: dict[str, Any] | None) -> GlobusSettings | None:
        if raw is None:
            return None
        self.unknown(raw, GlobusSettings, "globus.")
        self.required(raw, GlobusSettings, "globus.")
        staging_dir = self.path(raw, "staging_dir", "globus.")
        assert staging_dir is not None
        return GlobusSettings(
            local_endpoint=self.string(raw, "local_endpoint", "globus.") or "",
            staging_path=self.string(raw, "staging_path", "globus.") or "",
            staging_dir=staging_dir,
            client_id_env=self.string(raw, "client_id_env", "globus."),
            client_secret_env=self.string(raw, "client_secret_env", "globus."),
            refresh_token_file=self.path(raw, "refresh_token_file", "globus."),
        )

    def entries(self, raw: object) -> tuple[Entry, ...]:
        if not isinstance(raw, list):
            raise self.fail("dataset", "must be a list of tables ([[dataset]])")
        entries = tuple(self.entry(i, item) for i, item in enumerate(raw))
        self.check_layout(entries)
        return entries

    def entry(self, index: int, raw: object) -> Entry:
        prefix = f"dataset[{index}]."
        if not isinstance(raw, dict):
            raise self.fail(f"dataset[{index}]", "must be a table")
        self.unknown(raw, Entry, prefix)
        self.required(raw, Entry, prefix)
        mount_path = normalize_mount_path(self.string(raw, "mountPath", prefix) or "")
        if mount_path is None:
            raise self.fail(prefix + "mountPath", f"{raw['mountPath']!r} is not an absolute path below /")
        sources = [key for key in ("url", "itemId", "folderId") if key in raw]
        if len(sources) != 1:
            raise self.fail(prefix + "url", "give exactly one of url, itemId, folderId")
        url = self.string(raw, "url", prefix)
        size: int | None = None
        if "size" in raw:
            try:
                size = parse_size(raw["size"])
            except ValueError as exc:
                raise self.fail(prefix + "size", str(exc)) from None
        stream = self.boolean(raw, "stream", prefix, False) if "stream" in raw else None
        sha256 = self.string(raw, "sha256", prefix)
        if sha256 is not None and not SHA256_RE.match(sha256):
            raise self.fail(prefix + "sha256", "must be 64 hexadecimal digits")
        entry = Entry(
            index=index,
            mount_path=mount_path,
            url=self.resolve_local(url) if url is not None else None,
            item_id=self.string(raw, "itemId", prefix),
            folder_id=self.string(raw, "folderId", prefix),
            size=size,
            sha256=sha256.lower() if sha256 else None,
            stream=stream,
        )
        if entry.url is not None and entry.scheme not in KNOWN_SCHEMES:
            raise self.fail(
                prefix + "url", f"unknown scheme {entry.scheme!r} (use http, https, file, globus or a path)"
            )
        if entry.scheme == "globus" and entry.size is None:
            raise self.fail(prefix + "size", "is required for globus:// entries")
        return entry

    def resolve_local(self, url: str) -> str:
        """Plain relative paths are relative to the spec file."""
        scheme = urlsplit(url).scheme
        if scheme == "" and not url.startswith("/"):
            return str((self.base / url).resolve())
        return url

    # -- cross-checks -----------------------------------------------------------------------

    def check_layout(self, entries: tuple[Entry, ...]) -> None:
        by_path: dict[str, Entry] = {}
        for entry in entries:
            key = f"dataset[{entry.index}].mountPath"
            if entry.mount_path in by_path:
                other = by_path[entry.mount_path].index
                raise self.fail(key, f"{entry.mount_path} is already used by dataset[{other}]")
            by_path[entry.mount_path] = entry
        for entry in entries:
            for parent in PurePosixPath(entry.mount_path).parents:
                outer = by_path.get(str(parent))
                if outer is not None:
                    kind = "file entry" if outer.is_file_kind else "entry"
                    raise self.fail(
                        f"dataset[{entry.index}].mountPath",
                        f"{entry.mount_path} is nested under the {kind} {outer.mount_path} (dataset[{outer.index}])",
                    )

    def check_publish(self, spec: Spec) -> None:
        """``[publish]`` needs what it publishes (runs kept on this host, so a workspace) and where
        (``[girder]``: its URL and secret)."""
        if spec.publish is None:
            return
        if spec.girder is None:
            raise self.fail("publish", "needs a [girder] section (api_url and a secret) to publish to")
        if spec.wholetale is not None:
            raise self.fail("publish", "publishes runs kept on this host; a [wholetale] session's are the server's")
        if spec.workspace is None:
            raise self.fail("publish", "publishes runs, and a session without a workspace has none")

    def check_providers(self, spec: Spec) -> None:
        for entry in spec.dataset:
            prefix = f"dataset[{entry.index}]."
            if (entry.item_id or entry.folder_id) and spec.girder is None and spec.wholetale is None:
                key = prefix + ("itemId" if entry.item_id else "folderId")
                raise self.fail(key, "Girder entries need a [girder] or [wholetale] section (api_url and a secret)")
            if entry.scheme == "globus" and spec.globus is None:
                raise self.fail(prefix + "url", "globus:// entries need a [globus] section")
            if entry.url is not None and entry.scheme in {"", "file", "local"}:
                local = local_path(entry.url or "")
                if not os.path.exists(local):
                    raise self.fail(prefix + "url", f"{local}: no such file or directory")

    # -- scalars ----------------------------------------------------------------------------

    def unknown(self, raw: dict[str, Any], cls: type, prefix: str) -> None:
        for key in raw:
            if key not in spec_keys(cls):
                raise self.fail(prefix + key, "unknown key")

    def required(self, raw: dict[str, Any], cls: type, prefix: str) -> None:
        for key in _required_keys(cls):
            if key not in raw:
                raise self.fail(prefix + key, "is required")

    def table(self, raw: dict[str, Any], key: str) -> dict[str, Any] | None:
        value = raw.get(key)
        if value is not None and not isinstance(value, dict):
            raise self.fail(key, "must be a table")
        return value

    def string(self, raw: dict[str, Any], key: str, prefix: str, default: str | None = None) -> Any:
        value = raw.get(key, default)
        if value is not None and not isinstance(value, str):
            raise self.fail(prefix + key, f"must be a string, got {value!r}")
        if value == "":
            raise self.fail(prefix + key, "must not be empty")
        return value

    def boolean(self, raw: dict[str, Any], key: str, prefix: str, default: bool) -> bool:
        """A TOML boolean, or its spelling as an ``-o key=value`` string."""
        value = raw.get(key, default)
        if isinstance(value, str) and value.lower() in _BOOLEAN_WORDS:
            return _BOOLEAN_WORDS[value.lower()]
        if not isinstance(value, bool):
            raise self.fail(prefix + key, f"must be true or false, got {value!r}")
        return value

    def integer(self, raw: dict[str, Any], key: str, prefix: str, default: int, low: int, high: int) -> int:
        """A whole number in [low, high], or its spelling as an ``-o key=value`` string."""
        value = raw.get(key, default)
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(prefix + key, f"must be a whole number, got {value!r}")
        if not low <= value <= high:
            raise self.fail(prefix + key, f"must be between {low} and {high}, got {value}")
        return value

    def url(self, raw: dict[str, Any], key: str, prefix: str) -> str:
        value = self.string(raw, key, prefix)
        if value is None:
            raise self.fail(prefix + key, "is required")
        if urlsplit(value).scheme not in {"http", "https"}:
            raise self.fail(prefix + key, f"must be an http(s) URL, got {value!r}")
        return str(value).rstrip("/")

    def path(self, raw: dict[str, Any], key: str, prefix: str) -> Path | None:
        value = self.string(raw, key, prefix)
        return None if value is None else (self.base / os.path.expanduser(value)).resolve()

    def duration(self, raw: dict[str, Any], key: str, prefix: str, default: float) -> float:
        try:
            return parse_duration(raw.get(key, default))
        except ValueError as exc:
            raise self.fail(prefix + key, str(exc)) from None

    def fraction(self, raw: dict[str, Any], key: str, default: float) -> float:
        value = raw.get(key, default)
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise self.fail(f"cache.{key}", f"not a number: {value!r}") from None
        if not 0.0 < number <= 1.0:
            raise self.fail(f"cache.{key}", f"must be in (0, 1], got {number}")
        return number


def normalize_mount_path(value: str) -> str | None:
    """``/a//b/`` → ``/a/b``; None for relative paths, ``/`` itself, or ``.``/``..`` parts."""
    if not value.startswith("/"):
        return None
    parts = [part for part in value.split("/") if part]
    if not parts or any(part in {".", ".."} or "\0" in part for part in parts):
        return None
    return "/" + "/".join(parts)


def local_path(url: str) -> str:
    """The filesystem path of a ``file://``, ``local://`` or plain path entry."""
    split = urlsplit(url)
    if split.scheme in {"file", "local"}:
        return (split.netloc + split.path) if split.scheme == "local" else split.path
    return url
