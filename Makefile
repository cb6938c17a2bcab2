# wtfs — the two commands a newcomer needs: `make demo` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
APT_PACKAGES := fuse3 libfuse3-dev pkg-config curl gcc
STAMP := $(VENV)/.installed

.PHONY: setup deps venv lint test test-fast demo demo-stop bench clean install install-systemd

setup: deps $(STAMP)

# Debian packages (as root): fuse3 for fusermount3, libfuse3-dev + pkg-config to build pyfuse3.
deps:
	@missing=""; for p in $(APT_PACKAGES); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  if [ "$$(id -u)" != 0 ]; then echo "wtfs: missing Debian packages:$$missing (run make setup as root)"; exit 1; fi; \
	  echo "installing$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

lint: setup
	$(VENV)/bin/ruff check wtfs tests
	$(VENV)/bin/ruff format --check wtfs tests
	$(VENV)/bin/mypy wtfs

test: setup lint
	$(VENV)/bin/pytest -q -ra

test-fast: setup
	$(VENV)/bin/pytest -q -x -m "not slow"

demo: setup
	@bash mounts/demo.sh

demo-stop:
	@bash mounts/demo.sh stop

bench: setup
	$(PY) -m tests.bench.run

# Install the commands where the units expect them, and mount.wtfs where mount(8) looks.
PREFIX ?= /usr/local
install: setup
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/sbin
	ln -sf $(abspath $(VENV))/bin/wtfs $(DESTDIR)$(PREFIX)/bin/wtfs
	ln -sf $(abspath $(VENV))/bin/mount.wtfs $(DESTDIR)/sbin/mount.wtfs

install-systemd: install
	install -d $(DESTDIR)/etc/systemd/system $(DESTDIR)/etc/wtfs/mounts
	install -m 0644 systemd/wtfs@.service $(DESTDIR)/etc/systemd/system/
	install -m 0644 systemd/mnt-wtfs-demo.mount systemd/mnt-wtfs-demo.automount $(DESTDIR)/etc/systemd/system/
	if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
