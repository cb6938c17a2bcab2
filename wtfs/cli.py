"""Command line: ``wtfs mount|umount …``, ``mount.wtfs``, and mount.fuse3's ``wtfs SPEC MP -o …``.

Exit status: 0 done, 1 failed at run time, 2 bad spec or usage. A user mistake is one line on
stderr, never a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

from . import __version__, mounttable, runtime
from .config import Spec, load_spec
from .errors import MountError, SpecError, WtfsError
from .log import setup_logging
from .procfs import pid_alive
from .publish.args import add_arguments as add_publish_arguments
from .store import RunStore, session_stores
from .store.executor import cancel, command_for
from .store.foreground import exit_status, run_in_foreground
from .store.runs import Run, RunStatus, create_run
from .store.versions import Unchanged, check_name, default_name, version_store

COMMANDS = {"mount", "umount", "version", "run", "status", "cache", "prefetch", "check", "publish"}
EXIT_FAILED = 1
EXIT_UNCHANGED = 3
EXIT_USAGE = 2
READY_TIMEOUT = 300.0
#: The daemon's last line to its starter; ``warning: …`` lines may come before it.
FINAL_REPORTS = ("ready", "error: ", "config-error: ")
STOP_TIMEOUT = 60.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"wtfs: {message}\n")


def _fail(message: str, status: int = EXIT_FAILED) -> int:
    print(f"wtfs: {message}", file=sys.stderr)
    return status


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="wtfs", description="FUSE filesystem for reproducible-research sessions")
    parser.add_argument("--version", action="version", version=f"wtfs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    mount = sub.add_parser("mount", help="mount a session spec")
    _mount_arguments(mount)

    version = sub.add_parser("version", help="manage versions of a mounted session").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    create = version.add_parser("create", help="snapshot the workspace into a new version")
    create.add_argument("mountpoint")
    create.add_argument("--name", help="default: the local time, e.g. 2026-11-30T12.00.00")
    create.add_argument("--force", action="store_true", help="create even if nothing changed")

    run = sub.add_parser("run", help="create, start, cancel and inspect recorded runs").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    run_create = run.add_parser("create", help="create a run of a version")
    run_create.add_argument("mountpoint")
    run_create.add_argument("--name")
    run_create.add_argument("--version", help="version name (default: the latest, taken first if needed)")
    run_start = run.add_parser("start", help="run the entrypoint in MOUNTPOINT/runs/NAME/workspace")
    run_start.add_argument("run_path", metavar="MOUNTPOINT/runs/NAME")
    run_start.add_argument("--entrypoint", default="run.sh")
    run_start.add_argument("--detach", action="store_true", help="return once the run is running")
    run_cancel = run.add_parser("cancel", help="SIGTERM the run, SIGKILL after --grace seconds")
    run_cancel.add_argument("run_path", metavar="MOUNTPOINT/runs/NAME")
    run_cancel.add_argument("--grace", type=float, default=10.0)
    run_status = run.add_parser("status", help="print the run's status")
    run_status.add_argument("run_path", metavar="MOUNTPOINT/runs/NAME")
    run_status.add_argument("--json", action="store_true")

    status = sub.add_parser("status", help="the host cache: usage, sessions, locks, transfers")
    _cache_arguments(status)
    status.add_argument("--json", action="store_true")
    status.add_argument("--watch", action="store_true", help="keep showing, with progress bars on a terminal")
    status.add_argument("--interval", type=float, default=1.0)

    cache = sub.add_parser("cache", help="list, collect or evict cached copies").add_subparsers(
        dest="action", required=True, parser_class=_Parser
    )
    cache_ls = cache.add_parser("ls", help="the registry of cached objects")
    _cache_arguments(cache_ls)
    cache_ls.add_argument("--json", action="store_true")
    cache_gc = cache.add_parser("gc", help="evict unlocked copies down to gc_end_fraction")
    _cache_arguments(cache_gc)
    cache_gc.add_argument("--dry-run", action="store_true")
    cache_evict = cache.add_parser("evict", help="evict the cached copies of these data files")
    cache_evict.add_argument("paths", nargs="+", metavar="PATH")

    prefetch = sub.add_parser("prefetch", help="start transfers of data files without opening them")
    prefetch.add_argument("paths", nargs="+", metavar="PATH")
    prefetch.add_argument("--wait", action="store_true", help="show progress until they land")

    check = sub.add_parser("check", help="exit 0 if the mount answers and its daemon is alive")
    check.add_argument("mountpoint")
    check.add_argument("--timeout", type=float, default=10.0)

    add_publish_arguments(sub.add_parser("publish", help="upload a file or tree into a Girder folder"))

    umount = sub.add_parser("umount", help="release locks and unmount cleanly")
    umount.add_argument("mountpoint")
    umount.add_argument("--timeout", type=float, default=STOP_TIMEOUT, help="seconds to wait for the daemon")
    return parser


def _cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "mountpoint", nargs="?", help="a wtfs mount: its host cache (default: the mount the current directory is in)"
    )
    parser.add_argument("--cache-dir", help="this host cache instead (default: the mount's, else the default cache)")


def _mount_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("spec", help="session spec (TOML or JSON)")
    parser.add_argument("mountpoint", nargs="?", help="default: the spec's mountpoint key")
    parser.add_argument("-f", "--foreground", action="store_true", help="stay in the foreground")
    parser.add_argument("-o", dest="options", action="append", default=[], metavar="OPT[,OPT...]")
    parser.add_argument("--debug", action="store_true", help="log debug messages")
    parser.add_argument("--ready-fd", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--log-file", default=None, help=argparse.SUPPRESS)  # reopened on SIGHUP


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    if len(args_list) >= 2 and args_list[0] not in {*COMMANDS, "-h", "--help"} and not args_list[0].startswith("-"):
        args_list = ["mount", *_without_implied_suid(args_list)]  # mount.fuse3: "wtfs SPEC MOUNTPOINT -o OPTS"
    args = build_parser().parse_args(args_list)
    try:
        if args.command == "mount":
            return cmd_mount(args)
        if args.command == "version":
            return cmd_version_create(args)
        if args.command == "run":
            return cmd_run(args)
        if args.command in ("status", "cache", "prefetch"):
            from . import cache_commands  # the cache layer: imported by the commands that use it
        if args.command == "status":
            return cache_commands.show_status(args.mountpoint, args.cache_dir, args.json, args.watch, args.interval)
        if args.command == "cache":
            if args.action == "ls":
                return cache_commands.cache_ls(args.cache_dir, args.json, args.mountpoint)
            if args.action == "gc":
                return cache_commands.cache_gc(args.cache_dir, args.dry_run, args.mountpoint)
            return cache_commands.cache_evict(args.paths)
        if args.command == "prefetch":
            return cache_commands.prefetch(args.paths, args.wait)
        if args.command == "publish":
            from .publish import command as publish_command  # trio, httpx: only publish needs them here

            return publish_command.run(args)
        if args.command == "check":
            healthy, reason = mounttable.check(args.mountpoint, args.timeout)
            print(f"{args.mountpoint}: {reason}", file=sys.stdout if healthy else sys.stderr)
            return 0 if healthy else EXIT_FAILED
        return cmd_umount(args)
    except SpecError as exc:
        return _fail(str(exc), EXIT_USAGE)
    except WtfsError as exc:
        return _fail(str(exc))
    except OSError as exc:  # e.g. mkdir through the mount: EEXIST, EBUSY, EACCES
        return _fail(f"{exc.filename}: {exc.strerror}" if exc.filename else str(exc))
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


def _without_implied_suid(args: list[str]) -> list[str]:
    """mount.fuse3 run by root appends ``dev,suid`` to every mount not saying ``nodev,nosuid``, so
    on this path they are not the user's choice: drop them (``-o suid``/``dev`` work with type ``wtfs``)."""
    kept: list[str] = []
    for arg in args:
        if kept and kept[-1] == "-o":
            arg = ",".join(o for o in arg.split(",") if o not in {"dev", "suid"})
            if not arg:
                kept.pop()
                continue
        kept.append(arg)
    return kept


def mount_helper(argv: Sequence[str] | None = None) -> int:
    """``mount.wtfs SPEC MOUNTPOINT [-o options]`` as mount(8) and systemd call it."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # mount(8) may pass -n (no mtab), -s (sloppy), -v: accept and drop them.
    args_list = [a for a in args_list if a not in {"-n", "-s", "-v"}]
    return main(["mount", *args_list])


def cmd_mount(args: argparse.Namespace) -> int:
    spec = load_spec(args.spec, args.options)
    if spec.mount.fsname is None:  # the source as fstab names it (symlinks kept), for mount -a
        spec = replace(spec, mount=replace(spec.mount, fsname=os.path.abspath(args.spec)))
    if args.mountpoint is None:
        if spec.mountpoint is None:
            raise SpecError(str(spec.path), "mountpoint", "no MOUNTPOINT given and none in the spec")
        args.mountpoint = str(spec.mountpoint)
    if args.foreground:
        from . import daemon

        setup_logging(args.debug or spec.mount.debug)
        return daemon.run(spec, args.mountpoint, daemon.ReadyReport(args.ready_fd), args.log_file)
    return _start_background(args, spec.state_dir)


def _start_background(args: argparse.Namespace, state_dir: Path) -> int:
    """Start the daemon detached and return once the mount answers (or say why not)."""
    state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)  # the daemon's own files: private
    log_path = state_dir / "wtfs.log"
    os.close(os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
    read_end, write_end = os.pipe()
    command = [sys.executable, "-m", "wtfs", "mount", "-f", "--ready-fd", str(write_end), "--log-file", str(log_path)]
    command += [args.spec, args.mountpoint]
    for group in args.options:
        command += ["-o", group]
    if args.debug:
        command.append("--debug")
    with open(log_path, "ab") as log_file, open(os.devnull, "rb") as devnull:
        proc = subprocess.Popen(
            command,
            stdin=devnull,
            stdout=log_file,
            stderr=log_file,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    os.close(write_end)
    lines = _read_report(read_end, proc)
    message = lines[-1] if lines else ""
    warnings = [line.removeprefix("warning: ") for line in lines if line.startswith("warning: ")]
    for warning in warnings:
        print(f"wtfs: warning: {warning}", file=sys.stderr)
    if warnings:
        print(f"wtfs: mounted with {len(warnings)} warning(s); the log: {log_path}", file=sys.stderr)
    if message == "ready":
        return 0
    if message.startswith("error: "):
        return _fail(message.removeprefix("error: "))
    if message.startswith("config-error: "):
        return _fail(message.removeprefix("config-error: "), EXIT_USAGE)
    return _fail(f"the daemon exited before the mount was ready; see {log_path}")


def _read_report(fd: int, proc: subprocess.Popen[bytes]) -> list[str]:
    """The daemon's lines up to ``ready`` or ``error: …`` (``warning: …`` lines before it)."""
    deadline = time.monotonic() + READY_TIMEOUT
    lines: list[str] = []
    with os.fdopen(fd, "rb", buffering=0) as pipe:
        for raw in pipe:  # ends when the daemon closes its end (after ready or error) or exits
            lines.append(raw.decode(errors="replace").strip())
            if lines[-1].startswith(FINAL_REPORTS) or time.monotonic() > deadline:
                break
    if not lines and proc.poll() is None:
        proc.terminate()
    return lines


def cmd_umount(args: argparse.Namespace) -> int:
    """Stop the recorded daemon (only if it still is that process), then make sure it is unmounted."""
    mountpoint = os.path.abspath(args.mountpoint)
    pid, note = _recorded_daemon(mountpoint)
    mounted = mounttable.mount_fstype(mountpoint) is not None
    if note is not None:
        if not mounted:
            return _fail(f"{note}; not mounted")
        print(f"wtfs: {note}", file=sys.stderr)
    if pid is not None:
        stopped = _stop_daemon(mountpoint, pid, args.timeout)
        if stopped is not None or mounttable.mount_fstype(mountpoint) is None:
            return stopped or 0
    if not mounted:
        return _fail(f"{mountpoint}: not mounted")
    ok, err = mounttable.fusermount(mountpoint, lazy=mounttable.is_stale(mountpoint))
    return 0 if ok else _fail(f"{mountpoint}: {err or 'unmount failed'}")


def _recorded_daemon(mountpoint: str) -> tuple[int | None, str | None]:
    """The pid to signal, if the recorded daemon still runs as that very process; a record of a
    daemon that is gone is removed, and a pid some other process now has is named, never signalled."""
    record = runtime.read_record(mountpoint)
    if record is None:
        return None, None
    recorded = record.get("pid")
    pid = recorded if isinstance(recorded, int) else 0
    who = runtime.daemon_of(record)
    if who == "alive":
        return pid, None
    runtime.remove_record(mountpoint, pid)
    if who == "other":
        return None, f"{mountpoint}: pid {pid} is no longer its daemon (another process has it since): not signalled"
    return None, None


def _stop_daemon(mountpoint: str, pid: int, timeout: float) -> int | None:
    """SIGTERM the daemon and wait for it; an exit status if it would not stop, else None."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    if pid_alive(pid):
        return _fail(f"{mountpoint}: daemon {pid} did not stop within {timeout:g}s")
    return None


def mounted_spec(mountpoint: str) -> Spec:
    """The spec a live wtfs daemon serves at ``mountpoint``."""
    record = runtime.read_record(os.path.abspath(mountpoint))
    if record is None or not pid_alive(int(record.get("pid", 0))):
        raise MountError(f"{mountpoint}: no wtfs daemon serves this mountpoint")
    return load_spec(record["spec"], record.get("options", []))


def cmd_version_create(args: argparse.Namespace) -> int:
    spec = mounted_spec(args.mountpoint)
    if spec.workspace is None:
        return _fail(f"{args.mountpoint}: the session has no workspace")
    store = version_store(spec)
    latest = store.latest()
    if not args.force and latest is not None and not store.changed_since(latest):
        return _fail(str(Unchanged(latest)), EXIT_UNCHANGED)
    name = check_name(args.name) if args.name else default_name({v.name for v in store.all()})
    try:  # through the mount: the daemon copies files open for writing instead of linking them
        os.mkdir(os.path.join(args.mountpoint, "versions", name))
    except FileExistsError:
        return _fail(f"version {name!r} exists")
    except OSError as exc:
        return _fail(f"{args.mountpoint}: version {name!r}: {exc.strerror}")
    version = store.get(name)
    print(f"created version {version.name!r} ({version.id})")
    return 0


def locate_run(run_path: str) -> tuple[Spec, Path, str]:
    """(spec, mountpoint, run name) for a path MOUNTPOINT/runs/NAME of a live mount."""
    mountpoint = runtime.mountpoint_of(run_path)
    if mountpoint is None:
        raise MountError(f"{run_path}: not inside a wtfs mount")
    rel = Path(os.path.abspath(run_path)).relative_to(mountpoint).parts
    if len(rel) != 2 or rel[0] != "runs":
        raise MountError(f"{run_path}: not a run (expected MOUNTPOINT/runs/NAME)")
    return mounted_spec(str(mountpoint)), mountpoint, rel[1]


def cmd_run(args: argparse.Namespace) -> int:
    if args.action == "create":
        spec = mounted_spec(args.mountpoint)
        if spec.workspace is None:
            return _fail(f"{args.mountpoint}: the session has no workspace, so no runs")
        versions, runs = session_stores(spec)
        if args.version is not None:
            run = create_run(runs, versions, args.name, args.version)
        else:  # a version may be taken first: through the mount, which knows the open files
            name = check_name(args.name) if args.name else default_name({r.name for r in runs.all()})
            os.mkdir(os.path.join(args.mountpoint, "runs", name))
            run = runs.get(name)
        print(f"created run {run.name!r} of version {versions.by_id(run.version_id).name!r}")
        return 0
    spec, mountpoint, name = locate_run(args.run_path)
    if spec.workspace is None:
        return _fail(f"{mountpoint}: the session has no workspace, so no runs")
    _, runs = session_stores(spec)
    run = runs.get(name)
    if args.action == "status":
        print(json.dumps(run.record, indent=1) if args.json else run.status_line, end="" if not args.json else "\n")
        return 0
    if args.action == "cancel":
        run = cancel(runs, run.id, args.grace)
        print(run.status_line, end="")
        return 0
    workdir = mountpoint / "runs" / name / "workspace"
    command_for(workdir, args.entrypoint)  # refuse a missing entrypoint before starting anything
    if args.detach:
        return _detach_run(runs, run, workdir, args.entrypoint)
    finished = run_in_foreground(runs, run.id, workdir, args.entrypoint)  # Ctrl-C cancels the run
    print(finished.status_line, end="", file=sys.stderr)
    return exit_status(finished)  # the entrypoint's, as a shell reports it (130 after Ctrl-C)


def _detach_run(runs: RunStore, run: Run, workdir: Path, entrypoint: str) -> int:
    command = [sys.executable, "-m", "wtfs.store.executor", str(runs.root.parent), run.id, str(workdir), entrypoint]
    with open(os.devnull, "r+b") as devnull:
        subprocess.Popen(command, stdin=devnull, stdout=devnull, stderr=devnull, start_new_session=True)
    deadline = time.monotonic() + 30
    while runs.by_id(run.id).status in (RunStatus.UNKNOWN, RunStatus.STARTING) and time.monotonic() < deadline:
        time.sleep(0.02)
    print(runs.by_id(run.id).status_line, end="")
    return 0
