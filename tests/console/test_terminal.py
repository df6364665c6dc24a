"""The console on a real pseudo-terminal, as an operator's SSH session gives it."""

from __future__ import annotations

import os
import pty
import select
import shlex
import shutil
import signal
import subprocess
import sys
import time

import pytest


def _as_controlling_terminal() -> None:
    import fcntl
    import termios

    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def test_the_console_leaves_cleanly_when_its_terminal_goes_away(tmp_path):
    master, slave = pty.openpty()
    state = tmp_path / "demo"
    proc = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state), "demo"],
                            stdin=slave, stdout=slave, stderr=slave, preexec_fn=_as_controlling_terminal,
                            close_fds=True, env={**os.environ, "TEXTUAL_ANIMATIONS": "none"})
    os.close(slave)
    try:
        screen, end = b"", time.monotonic() + 20
        while b" Clients" not in screen and time.monotonic() < end:
            if select.select([master], [], [], 0.2)[0]:
                screen += os.read(master, 65536)
        assert b" Clients" in screen, "the console never drew its menu"
        os.close(master)  # the SSH session is gone: the terminal hangs up
        master = -1
        proc.wait(timeout=5)
        assert proc.returncode == 1, f"expected a clean exit, got {proc.returncode} (negative: killed by a signal)"
        assert not (state / "control.sock").exists()  # the demo's daemon closed down properly
    finally:
        if master >= 0:
            os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_console_in_tmux_reconnects_to_a_restarted_daemon(sshd, state, tmp_path):
    """The console and the daemon as an operator runs them: the daemon gets SIGTERM and is started again; the
    console (in a real terminal, tmux's) says the daemon is gone, then shows the live state, with no key pressed."""
    from support import authorize_units, unit_yaml

    if shutil.which("tmux") is None:
        if os.environ.get("CI"):
            pytest.fail("tmux is missing in CI: make test installs it")
        pytest.skip("tmux not installed (apt-get install tmux)")
    config = tmp_path / "console.yaml"
    config.write_text(unit_yaml(sshd, {"master": []}))
    authorize_units(sshd, state, ["master"])
    command = [sys.executable, "-m", "console", "--state-dir", str(state.root), "--config", str(config)]
    env = {**os.environ, "TEXTUAL_ANIMATIONS": "none", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
    tmux = ["tmux", "-S", str(tmp_path / "tmux.sock")]
    log = (tmp_path / "daemon.log").open("ab")

    def start_daemon() -> subprocess.Popen:
        proc = subprocess.Popen([*command, "daemon"], stdout=log, stderr=log, env=env)
        _until(lambda: state.control_socket.exists(), 10, "the daemon's control socket")
        return proc

    def screen() -> str:
        return subprocess.run([*tmux, "capture-pane", "-p", "-t", "console"], capture_output=True, text=True,
                              env=env).stdout

    daemon = start_daemon()
    try:
        subprocess.run([*tmux, "new-session", "-d", "-s", "console", "-x", "80", "-y", "24",
                        shlex.join([*command, "console"])], check=True, env=env)
        subprocess.run([*tmux, "set-option", "-t", "console", "remain-on-exit", "on"], check=True, env=env)
        _until(lambda: "● up" in screen(), 20, "the unit up on the console", screen)

        daemon.send_signal(signal.SIGTERM)
        assert daemon.wait(timeout=5) == 0
        _until(lambda: "daemon gone, reconnecting" in screen(), 3, "the daemon-gone bar", screen)
        assert "as of" in screen()

        daemon = start_daemon()
        _until(lambda: "reconnecting" not in screen(), 3, "the bar gone", screen)
        _until(lambda: "● up" in screen() and "as of" not in screen(), 10, "the live state", screen)

        subprocess.run([*tmux, "send-keys", "-t", "console", "q"], check=True, env=env)
        _until(lambda: "the tunnels keep running in the daemon" in screen(), 10, "the closing line", screen)
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True, env=env)
        if daemon.poll() is None:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=5)
            except subprocess.TimeoutExpired:
                daemon.kill()
                daemon.wait()
        log.close()


def _until(predicate, timeout: float, what: str, show=None) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}"
                                 + (f"; the screen:\n{show()}" if show else ""))
        time.sleep(0.05)
