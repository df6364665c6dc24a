"""The endpoint auth status check (console/tunnel/endpoint_check.py) against real peers on loopback: OpenSSH's
sshd with different configs (password and keyboard-interactive offered or not, PAM, DenyUsers), Dropbear, a
closed port, plain TCP services that are not SSH, a listener that never accepts, and a name that cannot resolve.
Each answer is checked for its reason and for the words and hint an operator acts on."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
from pathlib import Path

import pytest
from sshd import Dropbear, Sshd, authorize_in_home, find_sshd, free_port
from support import run

from console.core.config import ServerConfig
from console.core.keys import fingerprint, load_or_create_key, parse_public_key, public_line
from console.core.known_hosts import KnownHosts
from console.core.states import EndpointReason, EndpointState
from console.tunnel.endpoint_check import check_login

IN_CI = bool(os.environ.get("CI"))
TIMEOUT = 3.0


def _sshd(root: Path, **options) -> Sshd:
    if find_sshd() is None:
        if IN_CI:
            pytest.fail("sshd is missing in CI: install openssh-server (make test does)")
        pytest.skip("sshd not installed (apt-get install openssh-server)")
    return Sshd(root, **options).start()


@pytest.fixture
def key_path(tmp_path) -> Path:
    """A unit's private key (made here: the check itself never makes one)."""
    path = tmp_path / "keys" / "master_ed25519"
    load_or_create_key(path, "sop-console-master")
    return path


def _line(key_path: Path) -> str:
    return public_line(load_or_create_key(key_path, "sop-console-master"), "sop-console-master")


def _pinned(server) -> ServerConfig:
    return ServerConfig("127.0.0.1", server.port, host_key=server.host_public_key)


def _check(server: ServerConfig, username: str, key_path: Path, known: KnownHosts, timeout: float = TIMEOUT):
    return run(check_login("edge", server, username, key_path, known, unit="master", timeout=timeout))


def _known(tmp_path) -> KnownHosts:
    return KnownHosts(tmp_path / "known_hosts")


def _host_fingerprint(server) -> str:
    return fingerprint(parse_public_key(server.host_public_key))


def test_available_when_the_key_logs_in(sshd, key_path, tmp_path):
    sshd.authorize("root", _line(key_path))
    check = _check(_pinned(sshd), "root", key_path, _known(tmp_path))
    assert check.state is EndpointState.AVAILABLE and check.reason is EndpointReason.OK, check
    assert check.available and check.hint == ""
    assert check.message == f"root logs in to 127.0.0.1:{sshd.port} with the key of unit master"
    assert check.address == f"127.0.0.1:{sshd.port}" and check.username == "root" and check.unit == "master"
    assert check.methods == ["publickey"]
    assert check.fingerprint == _host_fingerprint(sshd)
    assert check.server_version.startswith("SSH-2.0-OpenSSH_")
    assert check.checked_at.endswith("Z") and 0 < check.seconds < TIMEOUT
    assert check.endpoint == "edge"


def test_a_closed_port_is_a_network_error_naming_the_address(key_path, tmp_path):
    port = free_port()
    check = _check(ServerConfig("127.0.0.1", port), "root", key_path, _known(tmp_path))
    assert check.state is EndpointState.UNAVAILABLE and check.reason is EndpointReason.NETWORK
    assert check.message == f"connection refused by 127.0.0.1:{port}"
    assert check.address == f"127.0.0.1:{port}"
    assert "start sshd" in check.hint and "port" in check.hint
    assert check.fingerprint is None and check.server_version is None


def test_a_name_given_is_shown_beside_the_address_it_resolved_to(key_path, tmp_path):
    port = free_port()
    check = _check(ServerConfig("localhost", port), "root", key_path, _known(tmp_path))
    assert check.reason is EndpointReason.NETWORK
    assert check.message.startswith("connection refused by ") and "(localhost)" in check.message
    assert check.address in (f"127.0.0.1:{port}", f"[::1]:{port}")


def test_a_name_that_does_not_resolve(key_path, tmp_path):
    check = _check(ServerConfig("no-such-endpoint.invalid", 22), "root", key_path, _known(tmp_path))
    assert check.reason is EndpointReason.RESOLVE
    assert check.message.startswith("the name no-such-endpoint.invalid does not resolve (")
    assert "host name" in check.hint


@contextlib.contextmanager
def _tcp_service(handle):
    """A plain TCP service on a free loopback port, in a thread: handle(conn) serves each connection."""
    import threading

    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)  # a blocked accept() does not see the socket closed: look at `stop` often
    stop = threading.Event()

    def serve():
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with conn:
                handle(conn)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        listener.close()
        thread.join(5)


def _speaks_first(conn: socket.socket) -> None:  # an SMTP server
    conn.sendall(b"220 mail.example.net ESMTP Postfix\r\n")
    conn.settimeout(2)
    with contextlib.suppress(OSError):
        conn.recv(1024)


def _answers_the_greeting(conn: socket.socket) -> None:  # a web server, with a control character in its answer
    conn.settimeout(2)
    with contextlib.suppress(OSError):
        conn.recv(1024)
        conn.sendall(b"HTTP/1.0 400 Bad Request\r\nServer: toy\x1b[31m\r\n\r\n")


@pytest.mark.parametrize(("handle", "said"), [
    (_speaks_first, "'220 mail.example.net ESMTP Postfix\\r\\n'"),
    (_answers_the_greeting, "'HTTP/1.0 400 Bad Request\\r\\nServer: toy\\x1b[31m\\r\\n\\r\\n'"),
])
def test_a_service_that_is_not_ssh_is_named_with_what_it_said(handle, said, key_path, tmp_path):
    with _tcp_service(handle) as port:
        check = _check(ServerConfig("127.0.0.1", port), "root", key_path, _known(tmp_path))
    assert check.reason is EndpointReason.NOT_SSH, check
    assert check.message == f"not an SSH server on 127.0.0.1:{port} (it said: {said})"
    assert check.server_version == said  # cleaned: no raw control character reaches a terminal
    assert "\x1b" not in check.message + check.server_version
    assert "port" in check.hint


def test_a_listener_that_never_answers_is_bounded_by_the_timeout(key_path, tmp_path):
    """A port whose accept queue is full: the SYN is dropped, the connect hangs (an unreachable host, on
    loopback). Then a listener that accepts and says nothing. Both answer within the check's timeout."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    try:
        for _ in range(4):  # fill the accept queue (Linux keeps backlog + 1)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(full.getsockname())
            fillers.append(filler)
        port = full.getsockname()[1]
        check = _check(ServerConfig("127.0.0.1", port), "root", key_path, _known(tmp_path), timeout=0.5)
        assert check.reason is EndpointReason.NETWORK, check
        assert check.message == f"no answer from 127.0.0.1:{port} within 0.5s (timed out)"
        assert check.seconds < 1.5
    finally:
        for sock in [*fillers, full]:
            sock.close()

    def silent(conn: socket.socket) -> None:  # reads what comes, answers nothing, until the client leaves
        conn.settimeout(5)
        with contextlib.suppress(OSError):
            while conn.recv(1024):
                pass

    with _tcp_service(silent) as port:
        check = _check(ServerConfig("127.0.0.1", port), "root", key_path, _known(tmp_path), timeout=0.5)
    assert check.reason is EndpointReason.NOT_SSH, check
    assert check.message == f"127.0.0.1:{port} accepted the connection but said nothing within 0.5s"
    assert check.seconds < 1.5


def test_an_unknown_host_key_is_shown_and_never_recorded(sshd, key_path, tmp_path):
    sshd.authorize("root", _line(key_path))
    known = _known(tmp_path)
    check = _check(ServerConfig("127.0.0.1", sshd.port), "root", key_path, known)
    assert check.reason is EndpointReason.HOST_KEY_UNKNOWN
    fp = _host_fingerprint(sshd)
    assert check.fingerprint == fp
    assert check.message == f"the host key {fp} of 127.0.0.1:{sshd.port} is not trusted yet"
    assert "`sop-console trust master`" in check.hint
    assert check.methods == []  # nothing was offered to a server we do not trust

    # under accept-new a unit would record it on first contact: the check says so, and records nothing
    check = _check(ServerConfig("127.0.0.1", sshd.port, host_key_policy="accept-new"), "root", key_path, known)
    assert check.available, check
    assert f"host key {fp} not recorded yet" in check.message
    assert not known.path.exists()


def test_a_changed_host_key_names_both_fingerprints(sshd, key_path, tmp_path):
    sshd.authorize("root", _line(key_path))
    known = _known(tmp_path)
    old = load_or_create_key(tmp_path / "old_host_key", "old")
    known.add("127.0.0.1", sshd.port, old)
    before = known.path.read_text()
    check = _check(ServerConfig("127.0.0.1", sshd.port), "root", key_path, known)
    assert check.reason is EndpointReason.HOST_KEY_MISMATCH
    assert check.message == (f"HOST KEY CHANGED: 127.0.0.1:{sshd.port} presented {_host_fingerprint(sshd)}, "
                             f"expected {fingerprint(old)}")
    assert "`sop-console trust master --replace`" in check.hint and "attack" in check.hint
    assert known.path.read_text() == before

    # a pin wins over known_hosts, as for the unit worker
    check = _check(ServerConfig("127.0.0.1", sshd.port, host_key=public_line(old)), "root", key_path, known)
    assert check.reason is EndpointReason.HOST_KEY_MISMATCH


def test_a_refused_key_names_the_methods_the_server_offers(tmp_path, key_path):
    """On an sshd that offers passwords the hint is set-up by password; on one that offers keys only it is not."""
    both = _sshd(tmp_path / "pw", password_auth=True, extra="KbdInteractiveAuthentication yes")
    keys_only = _sshd(tmp_path / "keys-only")
    try:
        check = _check(_pinned(both), "root", key_path, _known(tmp_path))
        assert check.reason is EndpointReason.PUBLICKEY
        assert sorted(check.methods) == ["keyboard-interactive", "password", "publickey"]
        assert check.message.startswith(f"127.0.0.1:{both.port} did not accept the ssh-ed25519 key of unit master "
                                        "for root; the server offers publickey, ")
        assert check.hint.startswith("set up by password (the server offers ")
        assert "keyboard-interactive" in check.hint and "password)" in check.hint

        check = _check(_pinned(keys_only), "root", key_path, _known(tmp_path))
        assert check.reason is EndpointReason.PUBLICKEY
        assert check.methods == ["publickey"]
        assert check.message.endswith("the server offers publickey")
        assert "set up by key" in check.hint and "by script" in check.hint and "password" not in check.hint
    finally:
        both.stop()
        keys_only.stop()


def test_a_server_that_takes_no_keys_says_so(tmp_path, key_path):
    server = _sshd(tmp_path / "nokeys", password_auth=True, extra="PubkeyAuthentication no")
    try:
        check = _check(_pinned(server), "root", key_path, _known(tmp_path))
    finally:
        server.stop()
    assert check.reason is EndpointReason.PUBLICKEY and check.methods == ["password"]
    assert check.message == (f"127.0.0.1:{server.port} does not offer key logins to root; "
                             "the server offers password")
    assert "PubkeyAuthentication" in check.hint


def test_a_key_accepted_as_a_first_step_only_is_told_apart(tmp_path, key_path):
    """AuthenticationMethods publickey,password: sshd takes the key, then wants a password too; a unit has none."""
    server = _sshd(tmp_path / "two-steps", password_auth=True, extra="AuthenticationMethods publickey,password")
    server.authorize("root", _line(key_path))
    try:
        check = _check(_pinned(server), "root", key_path, _known(tmp_path))
    finally:
        server.stop()
    assert check.reason is EndpointReason.PUBLICKEY and check.methods == ["publickey", "password"], check
    assert check.message == (f"127.0.0.1:{server.port} accepted the ssh-ed25519 key of unit master for root but "
                             "wants another step after it: password")
    assert "AuthenticationMethods" in check.hint


def test_an_expired_account_is_named_in_the_servers_words(tmp_path, key_path, local_user):
    """With UsePAM, sshd sends PAM's account message as a banner and ends the login: the check shows it."""
    user, _, _ = local_user
    authorize_in_home(user, _line(key_path))
    server = _sshd(tmp_path / "pam", extra="UsePAM yes")
    try:
        assert _check(_pinned(server), user, key_path, _known(tmp_path)).available
        subprocess.run(["chage", "-E", "0", user], check=True)
        check = _check(_pinned(server), user, key_path, _known(tmp_path))
    finally:
        server.stop()
    assert check.reason is EndpointReason.ACCOUNT, check
    assert check.message == (f"127.0.0.1:{server.port} ended the login of {user}: "
                             "'Your account has expired; please contact your system administrator.'")
    assert "account" in check.hint


def test_an_account_sshd_refuses_in_silence_is_not_available(tmp_path, key_path, local_user):
    """DenyUsers: sshd tells the client nothing (its log does), so the check can say only that the key was
    refused; its hint names the account as a possible cause."""
    user, _, _ = local_user
    authorize_in_home(user, _line(key_path))
    server = _sshd(tmp_path / "deny", extra=f"DenyUsers {user}")
    try:
        check = _check(_pinned(server), user, key_path, _known(tmp_path))
    finally:
        server.stop()
    assert check.reason is EndpointReason.PUBLICKEY and check.methods == ["publickey"]
    assert "the account" in check.hint
    assert "listed in DenyUsers" in server.log_path.read_text()


def test_no_key_yet_is_said_without_touching_the_network(tmp_path):
    missing = tmp_path / "keys" / "master_ed25519"
    check = _check(ServerConfig("no-such-endpoint.invalid", 22), "root", missing, _known(tmp_path))
    assert check.reason is EndpointReason.NO_KEY
    assert check.message == f"no key yet for unit master ({missing})"
    assert "`sop-console key show master`" in check.hint
    assert not missing.exists()  # the check makes no key


def test_dropbear_available_and_refused(dropbear_tools, tmp_path, key_path, local_user):
    user, _, _ = local_user
    server = Dropbear(tmp_path / "dropbear").start()
    try:
        refused = _check(_pinned(server), user, key_path, _known(tmp_path))
        authorize_in_home(user, _line(key_path))
        available = _check(_pinned(server), user, key_path, _known(tmp_path))
    finally:
        server.stop()
    assert refused.reason is EndpointReason.PUBLICKEY and refused.methods == ["publickey"], refused  # -s: no passwords
    assert refused.message.endswith(f"did not accept the ssh-ed25519 key of unit master for {user}; "
                                    "the server offers publickey")
    assert refused.server_version.startswith("SSH-2.0-dropbear")
    assert available.available, available
    assert available.fingerprint == _host_fingerprint(server)


def test_checks_run_side_by_side(sshd, key_path, tmp_path):
    """The daemon checks several endpoints at once: each answer is its own."""
    sshd.authorize("root", _line(key_path))
    closed = free_port()

    async def both():
        return await asyncio.gather(
            check_login("a", _pinned(sshd), "root", key_path, _known(tmp_path), unit="master", timeout=TIMEOUT),
            check_login("b", ServerConfig("127.0.0.1", closed), "root", key_path, _known(tmp_path), unit=None,
                        timeout=TIMEOUT))
    a, b = run(both())
    assert a.available and a.endpoint == "a"
    assert b.reason is EndpointReason.NETWORK and b.endpoint == "b" and b.unit is None
