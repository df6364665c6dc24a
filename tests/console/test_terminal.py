"""The console on a real pseudo-terminal, as an operator's SSH session gives it."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time


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
        while b"Install ssh key" not in screen and time.monotonic() < end:
            if select.select([master], [], [], 0.2)[0]:
                screen += os.read(master, 65536)
        assert b"Install ssh key" in screen, "the console never drew its menu"
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
