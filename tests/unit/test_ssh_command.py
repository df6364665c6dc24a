"""The operator's SSH login under ForceCommand: SSH_ORIGINAL_COMMAND runs only the read-only commands, with the
forced line's options, split by shlex and never given to a shell (through a real sshd: tests/integration/
test_operator_login.py)."""

from __future__ import annotations

import pytest

from console.cli import main
from console.cli.ssh_command import Refused, original_command

FORCED = ["--state-dir", "/var/lib/sop-console"]


@pytest.mark.parametrize("asked, words", [
    ("status", ["status"]),
    ("status --json", ["status", "--json"]),
    ("  status   '--json' ", ["status", "--json"]),
    ("log", ["log"]),
    ("log -n 50", ["log", "-n", "50"]),
])
def test_read_only_commands_run_with_the_forced_options(asked, words):
    assert original_command(FORCED, {"SSH_ORIGINAL_COMMAND": asked}) == [*FORCED, *words]


@pytest.mark.parametrize("asked", [None, "", "   "])
def test_no_original_command_opens_the_console(asked):
    environ = {} if asked is None else {"SSH_ORIGINAL_COMMAND": asked}
    assert original_command(FORCED, environ) is None


@pytest.mark.parametrize("asked", [
    "rm -rf /", "status; id", "status && id", "status | sh", "$(id)", "`id`", "status\nid", "id",
    "internal-sftp", "/usr/lib/openssh/sftp-server", "daemon", "stop master", "key show", "console", "demo",
    "status --json --state-dir /tmp", "status --config /etc/shadow", "log -n 5 --follow", "log -f", "log -n -1",
    "log -n 5x", "log -n", "STATUS", "status --json --json", "'status", "-v status",
])
def test_anything_else_is_refused(asked):
    with pytest.raises(Refused) as refused:
        original_command(FORCED, {"SSH_ORIGINAL_COMMAND": asked})
    assert "\n" not in str(refused.value) and "status, status --json, log, log -n N" in str(refused.value)


def test_main_refuses_with_one_line_and_exit_2(monkeypatch, capsys, tmp_path):
    marker = tmp_path / "marker"
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", f"touch {marker}")
    assert main(["--state-dir", str(tmp_path / "state")]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith("sop-console: this login runs the console")
    assert not marker.exists()


def test_main_runs_an_allowed_command_against_the_forced_state_dir(monkeypatch, capsys, tmp_path):
    state = tmp_path / "state"
    state.mkdir()
    (state / "tunnel.log").write_text("".join(f"2026-11-22T10:00:0{n}Z master line {n}\n" for n in range(5)))
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "log -n 2")
    assert main(["--state-dir", str(state)]) == 0
    assert capsys.readouterr().out.splitlines() == ["2026-11-22T10:00:03Z master line 3",
                                                    "2026-11-22T10:00:04Z master line 4"]


def test_a_forced_command_of_its_own_ignores_the_original(monkeypatch, capsys, tmp_path):
    """ForceCommand `sop-console log` runs log whatever the client asked (sshd's own rule for forced commands)."""
    monkeypatch.setenv("SSH_ORIGINAL_COMMAND", "rm -rf /")
    assert main(["--state-dir", str(tmp_path / "state"), "log", "-n", "1"]) == 0
