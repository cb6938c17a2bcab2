# wtfs — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Debian packages (as root): fuse3 for fusermount3, libfuse3-dev + pkg-config + gcc to build
# pyfuse3 (all that `make install` needs); curl, strace and bubblewrap for the tests.
APT_RUNTIME := fuse3 libfuse3-dev pkg-config gcc
APT_PACKAGES := $(APT_RUNTIME) curl strace bubblewrap
STAMP := $(VENV)/.installed

.PHONY: setup deps apt venv lint test test-fast demo demo-stop bench clean install install-systemd

setup: deps $(STAMP)

deps:
	@$(MAKE) -s apt PACKAGES="$(APT_PACKAGES)"

apt:
	@missing=""; for p in $(PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "wtfs: missing Debian packages:$$missing (run this make target as root)"; exit 1; fi; \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check wtfs tests tools
	$(VENV)/bin/ruff format --check wtfs tests tools
	$(VENV)/bin/mypy wtfs

test: setup lint
	$(VENV)/bin/pytest -q -ra --durations=15

test-fast: setup
	$(VENV)/bin/pytest -q -x -m "not slow"

demo: setup
	@bash mounts/demo.sh

demo-stop:
	@bash mounts/demo.sh stop

bench: setup
	$(PY) -m tests.bench.run

# Install wtfs without the test extras into its own venv (INSTALL_VENV; made in place, as a venv
# cannot move: DESTDIR applies to the links, the man page and the completion), link the commands
# where the units expect them and mount.wtfs where mount(8) looks. The man page and the bash
# completion are generated from the installed parser, so they list exactly what it accepts.
# Run it again to upgrade. `make test` and `make demo` keep using the development venv.
PREFIX ?= /usr/local
INSTALL_VENV ?= $(PREFIX)/lib/wtfs
MANDIR ?= $(PREFIX)/share/man/man1
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
install:
	@$(MAKE) -s apt PACKAGES="$(APT_RUNTIME)"
	test -x $(INSTALL_VENV)/bin/python || python3 -m venv $(INSTALL_VENV)
	$(INSTALL_VENV)/bin/pip install -q --upgrade pip
	$(INSTALL_VENV)/bin/pip install -q .
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/sbin $(DESTDIR)$(MANDIR) $(DESTDIR)$(COMPLETIONDIR)
	ln -sf $(INSTALL_VENV)/bin/wtfs $(DESTDIR)$(PREFIX)/bin/wtfs
	ln -sf $(INSTALL_VENV)/bin/mount.wtfs $(DESTDIR)/sbin/mount.wtfs
	$(INSTALL_VENV)/bin/python tools/cli_docs.py man > $(DESTDIR)$(MANDIR)/wtfs.1
	$(INSTALL_VENV)/bin/python tools/cli_docs.py bash > $(DESTDIR)$(COMPLETIONDIR)/wtfs

install-systemd: install
	install -d $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/wtfs/mounts
	install -m 0644 systemd/wtfs@.service $(DESTDIR)/etc/systemd/system/
	install -m 0644 systemd/mnt-wtfs-demo.mount systemd/mnt-wtfs-demo.automount $(DESTDIR)/etc/systemd/system/
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
