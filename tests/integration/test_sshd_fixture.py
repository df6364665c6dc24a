"""The test sshd itself: an option a test or bench passes is the one sshd runs with (read back with `sshd -T`)."""

from __future__ import annotations

from sshd import Sshd


def test_extra_options_override_the_fixture_defaults(sshd, tmp_path):
    server = Sshd(tmp_path / "other", extra="AllowTcpForwarding no\nMaxStartups 2000\n",
                  match="Match User nobody\n  PermitListen 127.0.0.1:1")
    server.write_config()
    effective = server.effective()
    assert effective["allowtcpforwarding"] == "no"  # appended after the defaults, it used to be ignored
    assert effective["maxstartups"].startswith("2000:")
    assert sshd.effective()["allowtcpforwarding"] == "yes"  # the defaults still hold where nothing overrides
