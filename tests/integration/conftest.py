"""Fixtures for the peers the integration tests start themselves. As with sshd (tests/conftest.py): in CI a
missing peer binary fails the test instead of skipping it."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from sshd import DROPBEAR_TOOLS, find_dropbear

IN_CI = bool(os.environ.get("CI"))
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dropbear_tools() -> None:
    """Dropbear's dropbear, dbclient, dropbearkey and dropbearconvert (Debian's dropbear-bin; `make test`
    installs it)."""
    missing = [tool for tool in DROPBEAR_TOOLS if find_dropbear(tool) is None]
    if missing:
        if IN_CI:
            pytest.fail(f"{', '.join(missing)} missing in CI: install the package dropbear-bin (make test does)")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install dropbear-bin)")


@pytest.fixture(scope="session")
def installed():
    """`make install` into a temporary PREFIX and BINDIR that every user can enter (pytest's tmp dirs are
    root-only), once a session: the installed command, its prefix, and the folder for files other users read."""
    if shutil.which("make") is None:
        if IN_CI:
            pytest.fail("make is missing in CI")
        pytest.skip("make not installed")
    base = Path(tempfile.mkdtemp(prefix="sop-install-"))
    os.chmod(base, 0o755)
    # pip's cache and configuration of the user running the tests (the tests' own HOME is a throwaway)
    env = {**os.environ, "HOME": pwd.getpwuid(os.getuid()).pw_dir}
    done = subprocess.run(["make", "-C", str(REPO), "install", f"PREFIX={base}/opt", f"BINDIR={base}/bin"],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, f"make install failed:\n{done.stdout}\n{done.stderr}"
    yield Installed(base=base, prefix=base / "opt", command=base / "bin" / "sop-console")
    shutil.rmtree(base, ignore_errors=True)


@dataclass(frozen=True)
class Installed:
    base: Path      # 0755: put what other users must read here
    prefix: Path    # the venv
    command: Path   # BINDIR/sop-console, the link

