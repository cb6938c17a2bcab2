"""Containers (docs/operations.md): a host daemon's mount shared into a bubblewrap container.

The container starts before the mount exists and sees it arrive (rslave propagation); a
non-root user inside reads data/, writes workspace/ and takes a version; the mount outlives
the container.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import Session
from tests.mounting import is_mounted

pytestmark = [
    pytest.mark.fuse,
    pytest.mark.skipif(shutil.which("bwrap") is None, reason="needs bubblewrap (make setup installs it)"),
]
USER = 1000  # the container's user: not root, not the daemon's
#: What the user runs inside: wait (with a deadline) for the host's mount to appear, then use it.
SCRIPT = """
deadline=$(( $(date +%s) + 30 ))
until [ -e /mnt/tale/data/a.txt ]; do
  [ "$(date +%s)" -lt "$deadline" ] || { echo "the mount never appeared in the container" >&2; exit 3; }
  sleep 0.05
done
id -u
cat /mnt/tale/data/a.txt
echo "written in the container" > /mnt/tale/workspace/out.txt
mkdir /mnt/tale/versions/in-container
cat /mnt/tale/versions/in-container/workspace/out.txt
"""


@pytest.fixture
def shared_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory whose mounts propagate to the namespaces that copy it (as /mnt is on most hosts)."""
    mnts = tmp_path / "mnts"
    mnts.mkdir()
    subprocess.run(["mount", "--bind", str(mnts), str(mnts)], check=True)
    try:
        subprocess.run(["mount", "--make-shared", str(mnts)], check=True)
        yield mnts
    finally:
        subprocess.run(["umount", "--lazy", str(mnts)], check=True)


def user_session(session: Session, tmp_path: Path) -> tuple[Path, Path]:
    """A spec with one local file in data/ and a workspace owned by the container's user."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("from the data set\n")
    ws = tmp_path / "ws"
    ws.mkdir()
    os.chown(ws, USER, USER)
    return session.spec([{"mountPath": "/a.txt", "url": str(src / "a.txt")}], workspace=str(ws)), ws


def test_a_container_user_works_in_a_host_mount_that_outlives_it(
    session: Session, tmp_path: Path, shared_dir: Path
) -> None:
    spec, ws = user_session(session, tmp_path)
    (shared_dir / "tale").mkdir()
    container = subprocess.Popen(
        [
            *("bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"),
            *("--bind", str(shared_dir), "/mnt"),
            *("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent"),
            *("setpriv", f"--reuid={USER}", f"--regid={USER}", "--clear-groups", "sh", "-ec", SCRIPT),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    m = session.mount(spec, "allow_other", f"uid={USER}", f"gid={USER}", where="mnts/tale")
    try:  # unmounted here: the shared directory's own unmount comes before the session's teardown
        out, err = container.communicate(timeout=60)
        assert container.returncode == 0, err
        assert out.splitlines() == [str(USER), "from the data set", "written in the container"]

        assert is_mounted(m.path)  # the container is gone, the mount is not
        assert (m.data / "a.txt").read_text() == "from the data set\n"
        assert (ws / "out.txt").read_text() == "written in the container\n"
        assert os.stat(ws / "out.txt").st_uid == USER
        version = m.path / "versions" / "in-container" / "workspace" / "out.txt"
        assert version.read_text() == "written in the container\n"
    finally:
        container.kill()
        m.unmount()


def test_the_daemon_runs_inside_a_container_with_dev_fuse(session: Session, tmp_path: Path) -> None:
    """The other recipe: /dev/fuse and CAP_SYS_ADMIN given to the container, the mount its own."""
    spec, ws = user_session(session, tmp_path)
    mnt = tmp_path / "inside"
    mnt.mkdir()
    wtfs = Path(sys.executable).with_name("wtfs")
    as_user = f"setpriv --reuid={USER} --regid={USER} --clear-groups sh -ec"
    script = (
        f"{wtfs} mount {spec} {mnt} -o allow_other,uid={USER},gid={USER}\n"
        f"cd {mnt}; {as_user} 'cat data/a.txt; echo mine > workspace/out.txt; mkdir versions/v1'; cd /\n"
        f"{wtfs} umount {mnt}\n"
    )
    result = subprocess.run(
        [
            *("bwrap", "--ro-bind", "/", "/", "--dev", "/dev", "--dev-bind", "/dev/fuse", "/dev/fuse"),
            *("--proc", "/proc", "--tmpfs", "/run", "--bind", str(tmp_path), str(tmp_path)),
            *("--unshare-pid", "--cap-add", "CAP_SYS_ADMIN", "--die-with-parent", "sh", "-ec", script),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "from the data set\n"
    assert (ws / "out.txt").read_text() == "mine\n" and os.stat(ws / "out.txt").st_uid == USER
    assert not is_mounted(mnt)  # the mount lived in the container's namespace only
