"""The syslog sender (console/core/syslog.py) against real sockets: UDP and a Unix datagram socket that is
missing at first, a receiver that does not keep up (the sender never waits), the RFC 3164 bound."""

from __future__ import annotations

import logging
import os
import socket
import time

import pytest

from console.core import syslog
from console.core.syslog import ERR, INFO, WARNING, Syslog, Target, severity_of


@pytest.mark.parametrize("line, severity", [
    ("master Starting: 2 forwards up on 203.0.113.7:2222 as sop001", INFO),
    ("hub client acme connected from 198.51.100.23:50122", INFO),
    ("master forward ssh refused: server refused to listen on *:10022", WARNING),
    ("hub refused auth for acme from 198.51.100.23 with key SHA256:x: unknown key", WARNING),
    ("hub ending the session of client acme from 198.51.100.23:50122: disabled (quota 0)", WARNING),
    ("master auth failed: Permission denied", ERR),
    ("master HOST KEY MISMATCH for 203.0.113.7:2222", ERR),
    ("engine store /x/store.json was unusable (not JSON); moved aside", ERR),
])
def test_the_tunnel_logs_lines_get_a_severity_by_kind(line, severity):
    assert severity_of(line) == severity


def test_addresses_a_path_or_an_ip_address_and_port():
    assert Target.parse("/dev/log") == Target(path="/dev/log")
    assert Target.parse("127.0.0.1:514") == Target(host="127.0.0.1", port=514)
    assert Target.parse("[::1]:1514") == Target(host="::1", port=1514)
    for bad in ("log.example.com:514", "127.0.0.1", "127.0.0.1:0", "dev/log", "[::1]"):
        assert Target.parse(bad) is None, bad


def test_udp_lines_have_the_ident_the_pid_and_are_cut_at_1024_bytes():
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("127.0.0.1", 0))
    receiver.settimeout(5)
    sender = Syslog(f"127.0.0.1:{receiver.getsockname()[1]}")
    try:
        sender.send("hub refused exec\nof 'id'", WARNING)
        assert receiver.recv(4096) == f"<28>sop-console[{os.getpid()}]: hub refused exec of 'id'".encode()
        sender.send("é" * 2000)
        data = receiver.recv(4096)
        assert len(data) <= 1024 and data.endswith(b"...") and data.startswith(b"<30>sop-console[")
        data.decode("utf-8")  # cut on a character boundary
    finally:
        sender.close()
        receiver.close()


def test_a_missing_socket_is_tried_again_and_said_once(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(syslog, "RETRY_SECONDS", 0.05)
    path = tmp_path / "log.sock"
    sender = Syslog(str(path))
    sender.send("first")
    sender.send("second")
    assert sender.dropped == 2
    assert len([r for r in caplog.records if "lines are dropped" in r.getMessage()]) == 1
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))
    receiver.settimeout(5)
    time.sleep(0.06)
    sender.send("third", ERR)
    assert receiver.recv(4096).endswith(b": third") and sender.dropped == 0
    assert any("takes lines again (2 dropped" in r.getMessage() for r in caplog.records)
    sender.configure(None)
    sender.send("off")
    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        receiver.recv(4096)
    receiver.close()


def test_a_receiver_that_does_not_keep_up_never_holds_the_sender(tmp_path, caplog):
    caplog.set_level(logging.WARNING, logger="console.syslog")
    path = tmp_path / "log.sock"
    receiver = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    receiver.bind(str(path))  # and never read
    sender = Syslog(str(path))
    started = time.monotonic()
    for i in range(5000):
        sender.send(f"line {i} " + "x" * 200)
    assert time.monotonic() - started < 2.0
    assert sender.dropped > 0
    assert len([r for r in caplog.records if "not keeping up" in r.getMessage()]) == 1
    sender.close()
    receiver.close()
