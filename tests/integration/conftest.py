"""Fixtures for the peers the integration tests start themselves. As with sshd (tests/conftest.py): in CI a
missing peer binary fails the test instead of skipping it."""

from __future__ import annotations

import os

import pytest
from sshd import DROPBEAR_TOOLS, find_dropbear

IN_CI = bool(os.environ.get("CI"))


@pytest.fixture
def dropbear_tools() -> None:
    """Dropbear's dropbear, dbclient, dropbearkey and dropbearconvert (Debian's dropbear-bin; `make test`
    installs it)."""
    missing = [tool for tool in DROPBEAR_TOOLS if find_dropbear(tool) is None]
    if missing:
        if IN_CI:
            pytest.fail(f"{', '.join(missing)} missing in CI: install the package dropbear-bin (make test does)")
        pytest.skip(f"{', '.join(missing)} not installed (apt-get install dropbear-bin)")
