"""Session specs: good ones load, bad ones are refused in one line naming file, key and fault."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.conftest import render_spec
from tests.mounting import wtfs
from wtfs.config import MountOptions, load_spec, parse_options
from wtfs.errors import SpecError


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_full_key_set_loads(tmp_path: Path) -> None:
    (tmp_path / "local.bin").write_bytes(b"x")
    spec_path = write(
        tmp_path,
        """
name = "demo"
workspace = "ws"
cache_dir = "cache"
stall_timeout = "30s"
[cache]
capacity = "2 GiB"
gc_interval = "10m"
gc_start_fraction = 0.8
gc_end_fraction = 0.6
[girder]
api_url = "http://127.0.0.1:8080/api/v1"
api_key_env = "WTFS_GIRDER_API_KEY"
[globus]
local_endpoint = "abc"
staging_path = "/~/staging/"
staging_dir = "staging"
client_id_env = "GLOBUS_ID"
[[dataset]]
mountPath = "/papers//paper.pdf/"
url = "https://example.org/paper.pdf"
size = "3 MB"
[[dataset]]
mountPath = "/local.bin"
url = "local.bin"
""",
    )
    spec = load_spec(spec_path)
    assert spec.name == "demo"
    assert spec.workspace == tmp_path / "ws"
    assert spec.state_dir == tmp_path / ".wtfs-state" / "demo"
    assert spec.cache.capacity == 2 * 1024**3 and spec.cache.gc_interval == 600
    assert spec.stall_timeout == 30
    assert spec.girder is not None and spec.girder.secrets.api_key_env == "WTFS_GIRDER_API_KEY"
    assert spec.globus is not None and spec.globus.staging_dir == tmp_path / "staging"
    assert spec.dataset[0].mount_path == "/papers/paper.pdf" and spec.dataset[0].size == 3_000_000
    assert spec.dataset[1].url == str(tmp_path / "local.bin")


def test_json_spec_and_options_override(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    path = write(tmp_path, json.dumps({"name": "j", "dataSet": [{"mountPath": "/f", "url": "f"}]}), "s.json")
    spec = load_spec(path, ["capacity=1GiB,stall_timeout=5s", "allow_other,uid=1000,_netdev,x-systemd.automount"])
    assert spec.cache.capacity == 1024**3
    assert spec.stall_timeout == 5
    assert spec.mount.allow_other and spec.mount.uid == 1000


BAD_SPECS = [
    ("bogus = 1\n", "bogus: unknown key"),
    ('[[dataset]]\nurl = "http://x/y"\n', "dataset[0].mountPath: is required"),
    (
        '[[dataset]]\nmountPath = "/a"\nurl = "http://x/1"\n[[dataset]]\nmountPath = "/a/"\nurl = "http://x/2"\n',
        "dataset[1].mountPath: /a is already used by dataset[0]",
    ),
    (
        '[[dataset]]\nmountPath = "/a"\nurl = "http://x/1"\n[[dataset]]\nmountPath = "/a/b"\nurl = "http://x/2"\n',
        "dataset[1].mountPath: /a/b is nested under the file entry /a (dataset[0])",
    ),
    ('[[dataset]]\nmountPath = "/a"\nurl = "http://x/1"\nsize = "12 parsecs"\n', "dataset[0].size: not a size"),
    ('[[dataset]]\nmountPath = "/a"\nurl = "ftp://x/1"\n', "dataset[0].url: unknown scheme 'ftp'"),
    ('[[dataset]]\nmountPath = "a"\nurl = "http://x/1"\n', "dataset[0].mountPath: 'a' is not an absolute path"),
    ('[[dataset]]\nmountPath = "/a"\nurl = "/no/such/file"\n', "dataset[0].url: /no/such/file: no such file"),
    ('[[dataset]]\nmountPath = "/a"\nitemId = "58acccc7cbb11e4425ce147b"\n', "dataset[0].itemId: Girder entries"),
    ('[cache]\ncapacity = "1 GiB"\ngc_start_fraction = 1.5\n', "cache.gc_start_fraction: must be in (0, 1]"),
    ('[[dataset]]\nmountPath = "/a"\nurl = "http://x/1"\nsha256 = "abc"\n', "dataset[0].sha256: must be 64"),
    ("name = [\n", "not valid TOML"),
    ('local_roots = "/srv"\n', "local_roots: must be a list of directory paths"),
    ('local_roots = ["/no/such/dir"]\n', "local_roots: /no/such/dir: not a directory"),
]


@pytest.mark.parametrize(("text", "expected"), BAD_SPECS)
def test_bad_spec_is_refused_in_one_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}: ")
    assert expected in str(info.value)


@pytest.mark.parametrize(("text", "expected"), BAD_SPECS[:6])
def test_cli_refuses_bad_spec_with_exit_2(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path, text)
    (tmp_path / "mnt").mkdir()
    result = wtfs("mount", str(path), str(tmp_path / "mnt"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"wtfs: {path}: ") and expected in lines[0]
    assert "Traceback" not in result.stderr


def test_suid_dev_and_default_permissions_options() -> None:
    assert parse_options([]) == ({}, MountOptions(suid=False, dev=False))  # nosuid,nodev unless asked
    assert parse_options(["suid,dev,default_permissions"])[1] == MountOptions(suid=True, dev=True)
    assert parse_options(["suid,dev", "nosuid,nodev"])[1] == MountOptions()  # the last one given wins
    assert parse_options(["nodev,dev,nosuid"])[1] == MountOptions(dev=True)


def test_local_roots_resolve_against_the_spec_file(tmp_path: Path) -> None:
    (tmp_path / "shared").mkdir()
    (tmp_path / "abs").mkdir()
    path = write(tmp_path, f'local_roots = ["shared", "{tmp_path / "abs"}"]\n')
    assert load_spec(path).local_roots == (tmp_path / "shared", tmp_path / "abs")
    assert load_spec(write(tmp_path, "", "empty.toml")).local_roots == ()
    with pytest.raises(SpecError) as info:
        load_spec(path, ["local_roots=/"])
    assert str(info.value) == "-o: local_roots: is a list: give it in the spec file"


def test_unknown_option_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, render_spec([]))
    (tmp_path / "mnt").mkdir()
    result = wtfs("mount", str(path), str(tmp_path / "mnt"), "-o", "capacity=1GiB,frobnicate")
    assert result.returncode == 2
    assert result.stderr.strip() == "wtfs: -o: frobnicate: unknown option"


def test_missing_spec_file(tmp_path: Path) -> None:
    result = wtfs("mount", str(tmp_path / "nope.toml"), str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"wtfs: {tmp_path / 'nope.toml'}: no such spec file"


def test_version_is_one_line_and_exit_0() -> None:
    from wtfs import __version__

    result = wtfs("--version")
    assert result.returncode == 0 and result.stdout == f"wtfs {__version__}\n"
