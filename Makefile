# make demo: set up and run the demo (loopback hub, demo services, both units).
# make test: set up and run the test suite (installs openssh-server and dropbear-bin when they are missing).
# make install: a venv in $(PREFIX) from the system Python with this tree installed (not editable), the command
#   linked into $(BINDIR); every file readable and runnable by every user (the operator's account runs it).
PYTHON ?= python3
PREFIX ?= /opt/sop-console
BINDIR ?= /usr/local/bin
# The system's Python, not the installing user's (a pyenv or ~/.local Python is unreadable to other accounts).
SYSTEM_PYTHON ?= $(shell if [ -x /usr/bin/python3 ]; then echo /usr/bin/python3; else echo python3; fi)
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test bench venv install sshd dropbear autossh clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test,bench]'
	touch $(STAMP)

venv: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sop-console demo

install:
	umask 022 && $(SYSTEM_PYTHON) -m venv '$(PREFIX)'
	umask 022 && '$(PREFIX)/bin/python' -m pip install -q --upgrade '$(CURDIR)'
	chmod -R a+rX '$(PREFIX)'
	mkdir -p '$(BINDIR)'
	ln -sfn '$(PREFIX)/bin/sop-console' '$(BINDIR)/sop-console'
	@echo "installed: $(BINDIR)/sop-console -> $(PREFIX)/bin/sop-console ($$('$(PREFIX)/bin/sop-console' --version))"

sshd:
	@if [ -x /usr/sbin/sshd ] || command -v sshd >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing openssh-server (the tests talk to a real sshd)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server >/dev/null; \
	else \
		echo "sshd is missing: install the package openssh-server (e.g. sudo apt-get install openssh-server)"; exit 1; \
	fi

dropbear:
	@if command -v dbclient >/dev/null 2>&1 && { command -v dropbear >/dev/null 2>&1 || [ -x /usr/sbin/dropbear ]; }; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing dropbear-bin (the tests talk to a real Dropbear server and client)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dropbear-bin >/dev/null; \
	else \
		echo "dropbear is missing: install the package dropbear-bin (e.g. sudo apt-get install dropbear-bin)"; exit 1; \
	fi

autossh:
	@if command -v autossh >/dev/null 2>&1; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing autossh (bench/recovery.py compares against it)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq autossh >/dev/null; \
	else \
		echo "autossh is missing: install the package autossh to compare against it"; \
	fi

test: $(STAMP) sshd dropbear
	$(PY) -m pytest -q

bench: $(STAMP) sshd autossh
	$(PY) bench/recovery.py
	$(PY) bench/throughput.py
	$(PY) bench/log_view.py
	$(PY) bench/console_start.py
	$(PY) bench/hub_storm.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
