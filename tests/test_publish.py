"""``wtfs publish`` against the real Girder 5 fixture: structure, sha256, restarts, exit codes."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import pty
import signal
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import girder_client
import pytest

from tests.conftest import Session
from tests.girder.fixtures import KEY_ENV, DroppingProxy, Girder
from tests.mounting import WTFS, Mount, wait_for, wtfs
from wtfs.publish.journal import journal_path

pytestmark = pytest.mark.fuse  # as the other Girder tests: the fixture needs the test extras

MiB = 1024**2


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Journals under tmp_path, for this process and the CLI it starts."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "state"))
    return tmp_path / "state"


@pytest.fixture
def folder(girder: Girder) -> Iterator[str]:
    me = girder.alice.get("user/me")["_id"]
    created = girder.alice.createFolder(me, f"pub-{uuid.uuid4().hex[:8]}", parentType="user")
    yield created["_id"]


def publish(
    girder: Girder, path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    command = ["publish", str(path), "--girder-url", girder.url, "--api-key-env", KEY_ENV, *args]
    return wtfs(*command, env=env or dict(os.environ))


def summary(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines and lines[-1]["event"] == "done", result.stdout + result.stderr
    done: dict[str, Any] = lines[-1]
    return done


def make_tree(root: Path, files: dict[str, bytes]) -> None:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def remote_tree(gc: girder_client.GirderClient, folder_id: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    """rel → item (with its files), and rel/ → folder, the whole subtree."""
    found: dict[str, dict[str, Any]] = {}
    for item in gc.listItem(folder_id):
        assert prefix + item["name"] not in found, f"duplicate item {prefix}{item['name']}"
        found[prefix + item["name"]] = {**item, "files": list(gc.listFile(item["_id"]))}
    for sub in gc.listFolder(folder_id, parentFolderType="folder"):
        assert prefix + sub["name"] + "/" not in found, f"duplicate folder {prefix}{sub['name']}"
        found[prefix + sub["name"] + "/"] = sub
        found |= remote_tree(gc, sub["_id"], f"{prefix}{sub['name']}/")
    return found


def download(gc: girder_client.GirderClient, file_id: str) -> bytes:
    buffer = io.BytesIO()
    gc.downloadFile(file_id, buffer)
    return buffer.getvalue()


def assert_published(gc: girder_client.GirderClient, folder_id: str, files: dict[str, bytes]) -> None:
    found = remote_tree(gc, folder_id)
    items = {rel: item for rel, item in found.items() if not rel.endswith("/")}
    assert sorted(items) == sorted(files)
    for rel, data in files.items():
        item = items[rel]
        assert len(item["files"]) == 1, f"{rel}: {len(item['files'])} files"
        assert item["files"][0]["size"] == len(data)
        assert item["meta"]["sha256"] == sha(data) and item["meta"]["size"] == len(data)
        assert item["meta"]["wtfs"]["version"]
        assert sha(download(gc, item["files"][0]["_id"])) == sha(data), rel


TREE = {
    "top.txt": b"top\n",
    "empty": b"",
    "a/b/c/deep.csv": b"x,y\n1,2\n",
    "a/b/empty-too": b"",
    "données/été ☀.txt": "unicode ✓\n".encode(),
    "日本語/ファイル.bin": os.urandom(5000),
}


def test_tree_structure_sha256_and_a_second_run_sends_nothing(
    girder: Girder, folder: str, tmp_path: Path, state: Path
) -> None:
    files = {**TREE, "a/big.bin": os.urandom(20 * MiB + 123)}
    make_tree(tmp_path / "src", files)
    (tmp_path / "src" / "a" / "emptydir").mkdir()
    first = publish(girder, tmp_path / "src", "--folder-id", folder, "--json", "--chunk-size", str(8 * MiB))
    assert first.returncode == 0, first.stderr
    done = summary(first)
    assert done["files_uploaded"] == len(files) and done["bytes_uploaded"] == sum(map(len, files.values()))
    assert_published(girder.alice, folder, files)
    folders = remote_tree(girder.alice, folder)
    assert "a/emptydir/" in folders and folders["a/b/c/"]["meta"]["wtfs"]["source"]["path"].endswith("src")
    second = publish(girder, tmp_path / "src", "--folder-id", folder, "--json")
    assert second.returncode == 0, second.stderr
    assert summary(second) | {"files_skipped": 0} == done | {"bytes_uploaded": 0, "files_uploaded": 0}
    assert summary(second)["files_skipped"] == len(files)
    third = publish(girder, tmp_path / "src", "--folder-id", folder)  # not a terminal: one summary line
    assert third.returncode == 0 and "nothing changed, 0 bytes uploaded" in third.stdout
    assert_published(girder.alice, folder, files)
    journals = list((state / "wtfs" / "publish").iterdir())
    assert journals and all(p.stat().st_mode & 0o077 == 0 for p in journals)
    assert (state / "wtfs" / "publish").stat().st_mode & 0o777 == 0o700


def test_heartbeat_fields(girder: Girder, folder: str, tmp_path: Path, state: Path) -> None:
    make_tree(tmp_path / "src", TREE)
    result = publish(girder, tmp_path / "src", "--folder-id", folder, "--json", "--heartbeat", "0.01")
    assert result.returncode == 0, result.stderr
    beats = [json.loads(line) for line in result.stdout.splitlines()][:-1]
    assert beats and all(b["event"] == "heartbeat" for b in beats)
    fields = ("n_files_read", "n_bytes_read", "n_files_processed", "n_bytes_processed")
    for name in fields:
        assert sum(b[name] for b in beats) == beats[-1][f"total_{name}"]
    assert beats[-1]["total_n_files_processed"] == len(TREE)
    assert beats[-1]["total_n_bytes_read"] == sum(map(len, TREE.values()))


@pytest.fixture
def small_chunks(girder: Girder) -> Iterator[None]:
    """Girder refuses chunks under 5 MiB but the last; 1 MiB makes a kill mid-upload easy to hit."""
    key = "core.upload_minimum_chunk_size"
    girder.admin.put("system/setting", parameters={"key": key, "value": MiB})
    yield
    girder.admin.put("system/setting", parameters={"key": key, "value": 5 * MiB})


def uploading_offset(journal: Path) -> int | None:
    """The offset the journal records for an upload in progress, once there is one."""
    if not journal.exists():
        return None
    with sqlite3.connect(journal) as db:
        try:
            row = db.execute("SELECT offset FROM files WHERE state = 'uploading' AND offset > 0").fetchone()
        except sqlite3.OperationalError:
            return None
    return int(row[0]) if row else None


def test_kill_9_mid_upload_then_rerun_sends_only_what_is_missing(
    girder: Girder, folder: str, tmp_path: Path, state: Path, small_chunks: None
) -> None:
    big = os.urandom(64 * MiB)
    files = {**TREE, "big.bin": big}
    make_tree(tmp_path / "src", files)
    args = ["--girder-url", girder.url, "--api-key-env", KEY_ENV, "--folder-id", folder, "--json"]
    command = [*WTFS, "publish", str(tmp_path / "src"), *args, "--chunk-size", str(MiB), "--jobs", "2"]
    journal = journal_path(tmp_path / "src", girder.url, f"folder:{folder}")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        offset = wait_for(lambda: uploading_offset(journal), timeout=60, interval=0.005, what="an upload under way")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 0 < offset < len(big)
    rerun = publish(girder, tmp_path / "src", "--folder-id", folder, "--json", "--chunk-size", str(MiB))
    assert rerun.returncode == 0, rerun.stderr
    small = sum(map(len, TREE.values()))
    assert summary(rerun)["bytes_uploaded"] <= len(big) - offset + small
    assert_published(girder.alice, folder, files)
    again = publish(girder, tmp_path / "src", "--folder-id", folder, "--json")
    assert summary(again)["bytes_uploaded"] == 0


def test_changed_file_gets_new_contents_or_is_reported(
    girder: Girder, folder: str, tmp_path: Path, state: Path
) -> None:
    make_tree(tmp_path / "src", {"f.txt": b"one"})
    assert publish(girder, tmp_path / "src", "--folder-id", folder).returncode == 0
    (tmp_path / "src" / "f.txt").write_bytes(b"two, longer")
    refused = publish(girder, tmp_path / "src", "--folder-id", folder, "--no-overwrite")
    assert refused.returncode == 1
    assert refused.stderr.splitlines() == [
        "wtfs: publish: f.txt: already in Girder with other contents (--no-overwrite)"
    ]
    assert_published(girder.alice, folder, {"f.txt": b"one"})
    replaced = publish(girder, tmp_path / "src", "--folder-id", folder)
    assert replaced.returncode == 0, replaced.stderr
    assert_published(girder.alice, folder, {"f.txt": b"two, longer"})


def test_a_second_source_with_the_same_bytes_is_skipped(
    girder: Girder, folder: str, tmp_path: Path, state: Path
) -> None:
    """Another journal (another source path), same bytes in Girder: nothing is sent again."""
    make_tree(tmp_path / "one", TREE)
    make_tree(tmp_path / "two", TREE)
    assert publish(girder, tmp_path / "one", "--folder-id", folder).returncode == 0
    second = publish(girder, tmp_path / "two", "--folder-id", folder, "--json")
    assert second.returncode == 0, second.stderr
    assert summary(second)["bytes_uploaded"] == 0 and summary(second)["files_skipped"] == len(TREE)


def test_collection_and_folder_path_are_created(girder: Girder, tmp_path: Path, state: Path) -> None:
    admin_key = girder.admin.post("api_key", parameters={"name": f"pub-{uuid.uuid4().hex[:6]}"})["key"]
    env = {**os.environ, "WTFS_TEST_ADMIN_KEY": admin_key}
    make_tree(tmp_path / "src", {"x/y.txt": b"y"})
    name = f"coll-{uuid.uuid4().hex[:8]}"
    command = ["publish", str(tmp_path / "src"), "--girder-url", girder.url, "--api-key-env", "WTFS_TEST_ADMIN_KEY"]
    result = wtfs(*command, "--collection", name, "--folder-path", "A/B", env=env)
    assert result.returncode == 0, result.stderr
    target = girder.admin.resourceLookup(f"/collection/{name}/A/B")
    assert_published(girder.admin, target["_id"], {"x/y.txt": b"y"})
    again = wtfs(*command, "--collection", name, "--folder-path", "A/B", "--json", env=env)
    assert summary(again)["bytes_uploaded"] == 0


def test_single_file(girder: Girder, folder: str, tmp_path: Path, state: Path) -> None:
    make_tree(tmp_path, {"one.dat": b"just me"})
    assert publish(girder, tmp_path / "one.dat", "--folder-id", folder).returncode == 0
    assert_published(girder.alice, folder, {"one.dat": b"just me"})


def test_bad_key_is_one_line_and_exit_1(girder: Girder, folder: str, tmp_path: Path, state: Path) -> None:
    make_tree(tmp_path / "src", {"f": b"f"})
    result = publish(girder, tmp_path / "src", "--folder-id", folder, env={**os.environ, KEY_ENV: "not-a-key"})
    assert result.returncode == 1
    assert result.stderr.strip() == f"wtfs: {girder.url}: the Girder API key was refused (HTTP 400)"
    assert "not-a-key" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    "args",
    [
        [],  # no destination
        ["--folder-id", "x", "--collection", "c"],
        ["--folder-id", "x", "--folder-path", "a"],
        ["--folder-id", "x", "--jobs", "0"],
        ["--folder-id", "x", "--api-key-env", "A", "--api-key-file", "B"],
    ],
)
def test_usage_errors_exit_2(args: list[str], tmp_path: Path, state: Path) -> None:
    result = wtfs("publish", str(tmp_path), "--girder-url", "http://127.0.0.1:9/api/v1", *args)
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stderr.startswith("wtfs: ")


def test_configuration_errors_exit_2(tmp_path: Path, state: Path) -> None:
    no_url = wtfs("publish", str(tmp_path), "--folder-id", "x", "--api-key-env", KEY_ENV)
    assert no_url.returncode == 2 and "--girder-url" in no_url.stderr
    no_key = wtfs("publish", str(tmp_path), "--folder-id", "x", "--girder-url", "http://127.0.0.1:9/api/v1")
    assert no_key.returncode == 2 and "--api-key-env" in no_key.stderr
    unset = wtfs(
        "publish", str(tmp_path), "--folder-id", "x", "--girder-url", "http://127.0.0.1:9/api/v1",
        "--api-key-env", "WTFS_TEST_UNSET_VARIABLE",
    )  # fmt: skip
    assert unset.returncode == 2 and "WTFS_TEST_UNSET_VARIABLE is not set" in unset.stderr
    missing = wtfs("publish", str(tmp_path / "nope"), "--folder-id", "x", "--girder-url", "http://h/api/v1")
    assert missing.returncode == 2 and "no such file" in missing.stderr


def done_rows(journal: Path) -> int:
    if not journal.exists():
        return 0
    with sqlite3.connect(journal) as db:
        try:
            return int(db.execute("SELECT count(*) FROM files WHERE state = 'done'").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def test_girder_going_away_mid_way_exits_1_and_a_rerun_completes(
    girder: Girder, folder: str, tmp_path: Path, state: Path
) -> None:
    files = {f"d{i % 4}/f{i:03d}.txt": f"file {i}\n".encode() for i in range(200)}
    make_tree(tmp_path / "src", files)
    proxy = DroppingProxy(girder.port)
    try:
        api = f"http://127.0.0.1:{proxy.port}/api/v1"
        command = [*WTFS, "publish", str(tmp_path / "src"), "--girder-url", api, "--api-key-env", KEY_ENV]
        journal = journal_path(tmp_path / "src", api, f"folder:{folder}")
        proc = subprocess.Popen([*command, "--folder-id", folder, "--jobs", "2"], stderr=subprocess.PIPE, text=True)
        try:
            wait_for(lambda: done_rows(journal) >= 3, timeout=60, interval=0.005, what="some files done")
            proxy.set_online(False)
            _, stderr = proc.communicate(timeout=120)
        finally:
            proc.kill()
        assert proc.returncode == 1, stderr
        assert "Girder stopped answering" in stderr.splitlines()[-1]
        assert done_rows(journal) >= 3
        proxy.set_online(True)
        rerun = wtfs(*command[3:], "--folder-id", folder, "--json")
        assert rerun.returncode == 0, rerun.stderr
        assert summary(rerun)["files_skipped"] >= 3
        assert_published(girder.alice, folder, files)
    finally:
        proxy.close()


def test_defaults_from_the_mount_and_version_source(session: Session, girder: Girder, folder: str, state: Path) -> None:
    workspace = session.root / "ws"
    make_tree(workspace, {"out/result.txt": b"42\n"})
    spec = session.spec([], workspace=str(workspace), girder={"api_url": girder.url, "api_key_env": KEY_ENV})
    m = session.mount(spec)
    assert wtfs("version", "create", str(m.path), "--name", "v1").returncode == 0
    version = m.path / "versions" / "v1"
    result = wtfs("publish", str(version), "--folder-id", folder)
    assert result.returncode == 0, result.stderr
    expected = {str(p.relative_to(version)): p.read_bytes() for p in version.rglob("*") if p.is_file()}
    assert expected["workspace/out/result.txt"] == b"42\n"  # beside the version's manifest.json
    assert_published(girder.alice, folder, expected)
    item = remote_tree(girder.alice, folder)["workspace/out/result.txt"]
    source = item["meta"]["wtfs"]["source"]
    assert item["meta"]["wtfs"]["session"] == "test"
    assert source["version"] == "v1" and source["id"]


def test_progress_bar_on_a_terminal(girder: Girder, folder: str, tmp_path: Path, state: Path) -> None:
    make_tree(tmp_path / "src", TREE)
    leader, follower = pty.openpty()
    command = [*WTFS, "publish", str(tmp_path / "src"), "--girder-url", girder.url, "--api-key-env", KEY_ENV]
    proc = subprocess.Popen([*command, "--folder-id", folder], stdout=follower, stderr=subprocess.PIPE)
    os.close(follower)
    output = b""
    with contextlib.suppress(OSError):  # EIO once the child closed the terminal
        while chunk := os.read(leader, 65536):
            output += chunk
    os.close(leader)
    assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    assert f"published {len(TREE)}/{len(TREE)} files".encode() in output
    assert_published(girder.alice, folder, TREE)


def test_a_file_changed_while_sent_is_reported_then_republished(
    girder: Girder, folder: str, tmp_path: Path, state: Path, small_chunks: None
) -> None:
    make_tree(tmp_path / "src", {"grows.bin": os.urandom(64 * MiB)})
    command = [*WTFS, "publish", str(tmp_path / "src"), "--girder-url", girder.url, "--api-key-env", KEY_ENV]
    journal = journal_path(tmp_path / "src", girder.url, f"folder:{folder}")
    proc = subprocess.Popen([*command, "--folder-id", folder, "--chunk-size", str(MiB)], stderr=subprocess.PIPE)
    try:
        wait_for(lambda: uploading_offset(journal), timeout=60, interval=0.005, what="an upload under way")
        with open(tmp_path / "src" / "grows.bin", "ab") as grows:
            grows.write(b"more")
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1
    assert stderr.decode().splitlines() == ["wtfs: publish: grows.bin: changed while being uploaded; publish it again"]
    item = remote_tree(girder.alice, folder)["grows.bin"]
    assert "sha256" not in item.get("meta", {})  # never claimed for bytes that were not the file's
    rerun = wtfs(*command[3:], "--folder-id", folder)
    assert rerun.returncode == 0, rerun.stderr
    assert_published(girder.alice, folder, {"grows.bin": (tmp_path / "src" / "grows.bin").read_bytes()})


def test_links_and_a_fifo_swapped_in_are_left_out_without_hanging(
    girder: Girder, folder: str, tmp_path: Path, state: Path, small_chunks: None
) -> None:
    """As root (as the daemon publishing a run): links present at the scan, and a link and a
    FIFO swapped in for scanned files while an earlier file uploads, publish nothing of theirs."""
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "secret").write_bytes(b"root-only bytes\n")
    big = os.urandom(32 * MiB)
    src = tmp_path / "src"
    make_tree(src, {"a.bin": big, "b.txt": b"scanned b\n", "c.txt": b"scanned c\n"})
    (src / "link").symlink_to(private / "secret")
    (src / "linkdir").symlink_to(private)
    os.mkfifo(src / "pipe")
    command = [*WTFS, "publish", str(src), "--girder-url", girder.url, "--api-key-env", KEY_ENV, "--folder-id", folder]
    journal = journal_path(src, girder.url, f"folder:{folder}")
    proc = subprocess.Popen([*command, "--jobs", "1", "--chunk-size", str(MiB)], stderr=subprocess.PIPE, text=True)
    try:  # one job: b.txt and c.txt are opened only once a.bin is done
        wait_for(lambda: uploading_offset(journal), timeout=60, interval=0.005, what="a.bin under way")
        (src / "b.txt").unlink()
        (src / "b.txt").symlink_to(private / "secret")
        (src / "c.txt").unlink()
        os.mkfifo(src / "c.txt")  # opened by path, it would block forever: no writer
        _, stderr = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 1, stderr
    assert stderr.splitlines() == [
        *(f"wtfs: publish: {name}: not a regular file or directory, left out" for name in ("link", "linkdir", "pipe")),
        "wtfs: publish: b.txt: replaced by a symbolic link since it was scanned; left out",
        "wtfs: publish: c.txt: not a regular file",
    ]
    assert_published(girder.alice, folder, {"a.bin": big})  # nothing else, the secret nowhere


def test_a_folder_without_write_access_is_one_line(girder: Girder, tmp_path: Path, state: Path) -> None:
    collection = girder.admin.createCollection(f"ro-{uuid.uuid4().hex[:8]}", public=True)
    readable = girder.admin.createFolder(collection["_id"], "readable", parentType="collection", public=True)
    make_tree(tmp_path / "src", TREE)
    result = publish(girder, tmp_path / "src", "--folder-id", readable["_id"])
    assert result.returncode == 1
    assert result.stderr.splitlines() == [f"wtfs: folder {readable['_id']}: no write access"]
    assert list(girder.admin.listItem(readable["_id"])) == []


# -- [publish]: runs that end are published by the daemon ------------------------------------

RUN_SH = """#!/bin/sh
mkdir -p out/sub
echo 42 > out/result.txt
printf 'été\\n' > out/sub/résumé.txt
: > out/empty
exit ${EXIT_CODE:-0}
"""


def publishing_mount(session: Session, girder: Girder, publish: dict[str, str], run_sh: str = RUN_SH) -> Mount:
    workspace = session.root / "ws"
    make_tree(workspace, {"run.sh": run_sh.encode()})
    (workspace / "run.sh").chmod(0o755)
    girder_section = {"api_url": girder.url, "api_key_env": KEY_ENV}
    return session.mount(session.spec([], workspace=str(workspace), girder=girder_section, publish=publish))


def publish_state(run: Path) -> str:
    return (run / ".publish").read_text()


def on_disk(run: Path) -> dict[str, bytes]:
    workspace = run / "workspace"
    return {str(p.relative_to(workspace)): p.read_bytes() for p in workspace.rglob("*") if p.is_file()}


def test_a_run_that_ends_is_published_into_a_folder_named_as_the_run(
    session: Session, girder: Girder, folder: str
) -> None:
    m = publishing_mount(session, girder, {"folder_id": folder})
    assert wtfs("run", "create", str(m.path), "--name", "r1").returncode == 0
    run = m.path / "runs" / "r1"
    assert publish_state(run) == "pending\n" and ".publish" in os.listdir(run)
    started = wtfs("run", "start", str(run), env={**os.environ, "EXIT_CODE": "3"})  # a failed run publishes too
    assert started.returncode == 3, started.stderr
    wait_for(lambda: publish_state(run) == "done\n", timeout=60, what=".publish to say done")
    (published,) = girder.alice.listFolder(folder, name="r1")
    expected = on_disk(run)
    assert expected["out/result.txt"] == b"42\n" and expected["out/empty"] == b""
    assert_published(girder.alice, published["_id"], expected)
    item = remote_tree(girder.alice, published["_id"])["out/result.txt"]
    assert item["meta"]["wtfs"]["source"]["run"] == "r1" and item["meta"]["wtfs"]["session"] == "test"
    with pytest.raises(OSError) as refused:
        os.open(run / ".publish", os.O_WRONLY)
    assert refused.value.errno == errno.EROFS


def test_a_girder_that_refuses_says_failed_in_publish(session: Session, girder: Girder) -> None:
    collection = girder.admin.createCollection(f"ro-{uuid.uuid4().hex[:8]}", public=True)
    readable = girder.admin.createFolder(collection["_id"], "readable", parentType="collection", public=True)
    m = publishing_mount(session, girder, {"folder_id": readable["_id"]})
    os.mkdir(m.path / "runs" / "r")
    run = m.path / "runs" / "r"
    assert wtfs("run", "start", str(run)).returncode == 0
    state = wait_for(lambda: publish_state(run) if publish_state(run).startswith("failed") else None, timeout=60)
    assert state == f"failed: folder {readable['_id']}: no write access\n"
    assert list(girder.admin.listFolder(readable["_id"])) == []


def test_a_daemon_stopped_mid_publish_finishes_it_when_mounted_again(
    session: Session, girder: Girder, folder: str
) -> None:
    many = "#!/bin/sh\nmkdir -p d\nfor i in $(seq 1 100); do echo $i > d/f$i.txt; done\n"
    m = publishing_mount(session, girder, {"folder_id": folder}, many)
    os.mkdir(m.path / "runs" / "r")
    run = m.path / "runs" / "r"
    assert wtfs("run", "start", str(run)).returncode == 0
    wait_for(lambda: done_rows(run_journal(session)) >= 3, timeout=60, interval=0.005, what="some files published")
    m.unmount()
    record = json.loads(next((session.root / "state" / "runs").glob("*/run.json")).read_text())
    assert record["publish"] == "uploading"
    again = session.mount(m.spec)
    run = again.path / "runs" / "r"
    wait_for(lambda: publish_state(run) == "done\n", timeout=60, what=".publish to say done after the restart")
    (published,) = girder.alice.listFolder(folder, name="r")
    items = {rel: item for rel, item in remote_tree(girder.alice, published["_id"]).items() if "files" in item}
    expected = on_disk(run)  # no item twice (remote_tree asserts it), one file each, every sha256 right
    assert sorted(items) == sorted(expected) and all(len(item["files"]) == 1 for item in items.values())
    assert all(items[rel]["meta"]["sha256"] == sha(data) for rel, data in expected.items())


def run_journal(session: Session) -> Path:
    found = list((session.root / "state" / "runs").glob("*/publish.sqlite"))
    return found[0] if found else session.root / "missing"


def test_publish_without_girder_refuses_to_mount(session: Session) -> None:
    workspace = session.root / "ws"
    workspace.mkdir()
    spec = session.spec([], workspace=str(workspace), publish={"folder_id": "abc"})
    result = wtfs("mount", str(spec), str(session.root / "mnt"))
    assert result.returncode == 2  # a configuration error
    assert result.stderr == f"wtfs: {spec}: publish: needs a [girder] section (api_url and a secret) to publish to\n"
