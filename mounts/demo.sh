#!/usr/bin/env bash
# `make demo`: serve demo-data/ on loopback, mount mounts/demo.toml at demo/mnt, show a transfer.
# `make demo-stop` (or `bash mounts/demo.sh stop`) unmounts and stops the server.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$(pwd)
wtfs="$top/.venv/bin/wtfs"
mnt="$top/demo/mnt"
pidfile="$top/demo/http.pid"
port=8765

stop() {
  if grep -qs " $mnt " /proc/self/mountinfo; then "$wtfs" umount "$mnt" && echo "unmounted $mnt"; fi
  if [ -f "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; rm -f "$pidfile"; fi
}

if [ "${1:-}" = stop ]; then stop; exit 0; fi

mkdir -p "$mnt"
stop >/dev/null 2>&1 || true
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
  echo "demo: port $port on 127.0.0.1 is taken; stop what uses it and run make demo again" >&2
  exit 1
fi
"$top/.venv/bin/python" -m http.server "$port" --bind 127.0.0.1 --directory mounts/demo-data >/dev/null 2>&1 &
echo $! >"$pidfile"
for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.05; done

"$wtfs" mount mounts/demo.toml "$mnt"
echo "mounted the demo session at $mnt"
echo
echo "\$ ls -lR $mnt/data"
ls -lR "$mnt/data"
echo
echo "\$ cat $mnt/data/web/remote-notes.txt      # open() waits until the copy has landed"
cat "$mnt/data/web/remote-notes.txt"
echo
cat <<TXT
Try:
  ls -l $mnt/data/papers
  cat $mnt/data/papers/results.csv
  md5sum $mnt/data/web/remote-notes.txt mounts/demo-data/remote-notes.txt
  echo x > $mnt/data/README.txt          # Read-only file system
The daemon's log: demo/state/wtfs.log. Stop with: make demo-stop
TXT
