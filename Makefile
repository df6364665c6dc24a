# make demo: set up and run the demo (loopback hub, demo services, both units).
# make test: set up and run the test suite (installs openssh-server, dropbear-bin, tmux and sudo when they are missing).
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

.PHONY: demo test bench venv install sshd dropbear tmux sudo autossh socat clean

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

# $(call need,COMMAND,PACKAGE,WHY[,optional]): with COMMAND missing, install PACKAGE with apt (as root); else say
# how to, and fail unless the fourth argument says the tool is optional.
define need
	@if command -v $(1) >/dev/null 2>&1 || [ -x /usr/sbin/$(1) ]; then :; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
		echo "installing $(2) ($(3))"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(2) >/dev/null; \
	else \
		echo "$(1) is missing: install the package $(2) (e.g. sudo apt-get install $(2))"; $(if $(4),:,exit 1); \
	fi
endef

sshd:
	$(call need,sshd,openssh-server,the tests talk to a real sshd)

dropbear:
	$(call need,dropbear,dropbear-bin,the tests talk to a real Dropbear server and client)

tmux:
	$(call need,tmux,tmux,a console test runs in a real terminal)

sudo:
	$(call need,sudo,sudo,the endpoint set-up and sshd --fix tests log in as a user with password-less sudo)

autossh:
	$(call need,autossh,autossh,bench/recovery.py compares against it,optional)

socat:
	$(call need,socat,socat,bench/proxy.py compares the TCP proxy against it)

test: $(STAMP) sshd dropbear tmux sudo
	$(PY) -m pytest -q

bench: $(STAMP) sshd autossh sudo socat
	$(PY) bench/recovery.py
	$(PY) bench/throughput.py
	$(PY) bench/forward_proxy.py
	$(PY) bench/log_view.py
	$(PY) bench/console_start.py
	$(PY) bench/hub_storm.py
	$(PY) bench/endpoint_check.py
	$(PY) bench/endpoints_screen.py
	$(PY) bench/proxy.py
	$(PY) bench/rules_screen.py
	@if [ "$$(id -u)" = 0 ]; then $(PY) bench/sshd_check.py; else echo "bench/sshd_check.py skipped: it makes throwaway users, run it as root"; fi
	$(PY) bench/oplog.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
