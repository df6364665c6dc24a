"""Installing for an operator's account: `make install` into a prefix any user can run, and the shipped systemd
unit. The installed command runs as a throwaway user who cannot read the installing user's Python or tree."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from support import as_user

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "config" / "sop-console.service"


def test_make_install_runs_as_another_user(installed, local_user):
    name, _, home = local_user
    config = installed.base / "console.yaml"
    shutil.copy(REPO / "config" / "console.example.yaml", config)
    os.chmod(config, 0o644)

    version = as_user(name, home, installed.command, "--version")
    assert version.returncode == 0, version.stderr
    assert version.stdout.startswith("sop-console ")
    check = as_user(name, home, installed.command, "check", "--config", config)
    assert check.returncode == 0, check.stderr
    assert f"{config}: ok: master" in check.stdout

    # the package itself is in the prefix, not a link back to this tree (an editable install)
    where = as_user(name, home, installed.prefix / "bin" / "python", "-c", "import console; print(console.__file__)")
    assert where.stdout.startswith(str(installed.prefix)), where.stdout + where.stderr
    if os.access("/usr/bin/python3", os.X_OK):  # the system's Python, not the installing user's
        assert (installed.prefix / "bin" / "python").resolve() == Path("/usr/bin/python3").resolve()
    assert installed.command.is_symlink()
    mode = (installed.prefix / "bin" / "sop-console").stat().st_mode
    assert mode & stat.S_IROTH and mode & stat.S_IXOTH


def test_systemd_unit(installed):
    text = UNIT.read_text()
    settings = [line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#")]
    keys = {key: value for key, value in settings}
    start = keys["ExecStart"].split()
    assert start[1] == "daemon" and "--config" in start and "--state-dir" in start
    state_dir = start[start.index("--state-dir") + 1]
    assert keys["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert keys["Restart"] == "on-failure"
    assert keys["NoNewPrivileges"] == "yes" and keys["ProtectSystem"] == "strict"
    assert state_dir in keys["ReadWritePaths"].split()

    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed: the unit's settings were checked, not verified by systemd")
    # verify wants the ExecStart program to exist: the one just installed stands in for /opt/sop-console's
    unit = installed.base / "sop-console.service"
    unit.write_text(text.replace(start[0], str(installed.prefix / "bin" / "sop-console")))
    done = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr
