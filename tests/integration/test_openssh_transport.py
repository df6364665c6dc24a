"""What only the OpenSSH transport has (tunnel.transport: openssh): its ssh master, the files it is given, and what
it does not carry. Everything the two transports share runs for both in test_tunnels.py, test_refusals.py,
test_peers.py and test_hub.py (the `transport` fixture)."""

from __future__ import annotations

import asyncio
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import support
from support import EchoServer, authorize_units, eventually, forward_port, fwd_of, roundtrip, run, running_engine, \
    unit_of, unit_yaml
from sshd import free_port

from console.core.config import parse_config
from console.core.states import RuleState


@pytest.fixture(autouse=True)
def _openssh(monkeypatch):
    monkeypatch.setattr(support, "TRANSPORT", "openssh")


def _masters(worker) -> list[int]:
    """The pids of the ssh processes running as masters for this unit (its control socket on their command line)."""
    control = str(worker._name("ctl"))
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"ControlPath={control}".encode() in argv and b"ControlMaster=yes" in argv:
                found.append(int(entry))
    return found


def test_the_master_is_given_only_the_units_key_and_the_pinned_host_key(sshd, state, tmp_path):
    """ssh reads nothing of the operator's: a ~/.ssh/config sending every host elsewhere and a known_hosts entry
    with another key change nothing. The pinned file holds the server's key alone, under the unit's alias, 0600 in
    a 0700 dir; the forward's socket is 0600."""
    home = Path(os.environ["HOME"])
    (home / ".ssh").mkdir(mode=0o700)
    (home / ".ssh" / "config").write_text("Host *\n  Port 1\n  User nobody\n  ProxyCommand false\n")
    (home / ".ssh" / "known_hosts").write_text(
        f"[127.0.0.1]:{sshd.port} ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGwWYqbRiOTPjuSmo0kqfVhJBj3KBH8twYnIH8EkXNJB\n")

    async def body():
        async with EchoServer() as echo, running_engine(sshd, state, {"master": [f"app 0 127.0.0.1:{echo.port}"]}) \
                as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up", what="master up")
            worker = engine.workers["master"]
            assert type(worker).__name__ == "OpenSshUnitWorker"
            assert await roundtrip(forward_port(engine, "master", "app"), b"hello") == b"hello"
            pinned = worker._name("known_hosts")
            assert pinned.read_text() == f"{worker.alias} {sshd.host_public_key}\n"
            assert stat.S_IMODE(pinned.stat().st_mode) == 0o600
            assert stat.S_IMODE(pinned.parent.stat().st_mode) == 0o700
            socket = worker._name("fw", "app")
            assert stat.S_ISSOCK(socket.stat().st_mode) and stat.S_IMODE(socket.stat().st_mode) == 0o600
            (master,) = _masters(worker)
            argv = Path(f"/proc/{master}/cmdline").read_bytes().split(b"\0")
            assert argv[argv.index(b"-F") + 1] == b"none"
            assert str(state.unit_key("master")).encode() in argv
            assert b"StrictHostKeyChecking=yes" in argv and b"IdentitiesOnly=yes" in argv
            assert b"ServerAliveInterval=1" in argv and b"ServerAliveCountMax=2" in argv
            environ = Path(f"/proc/{master}/environ").read_bytes().split(b"\0")
            assert not any(item.startswith(b"SSH_AUTH_SOCK=") for item in environ)
        assert not socket.exists()   # the relay's socket goes with the forward
    run(body())


def _stdio_clients() -> list[int]:
    """ssh processes carrying one connection each (`ssh -W`) that are still running."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
                zombie = Path(f"/proc/{entry}/stat").read_text().split()[2] == "Z"
            except OSError:
                continue
            if argv[:1] and argv[0].endswith(b"ssh") and b"-W" in argv and not zombie:
                found.append(int(entry))
    return found


def test_tcp_egress_through_an_openssh_unit_counts_ends_its_ssh_and_names_a_refusal(sshd, state):
    """An egress rule through the unit: each connection is an `ssh -W` over the master, ended with the connection;
    a destination the server cannot reach is marked down in the server's words."""
    async def body():
        dead = free_port()
        async with EchoServer() as echo, running_engine(sshd, state, {"master": []}) as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up", what="master up")
            before = set(_stdio_clients())
            good, bad = f"tcp:{free_port()}:127.0.0.1:{echo.port}", f"tcp:{free_port()}:127.0.0.1:{dead}"
            for text in (good, bad):
                await engine.rules.add("egress", text, "master", who="test")
            rule = engine.rules.find("egress", good, "master")
            await eventually(lambda: engine.rules.status(rule).state is RuleState.LISTENING, what="listening")
            payloads = [os.urandom(100_000 + n) for n in range(10)]
            port = int(good.split(":")[1])
            assert await asyncio.gather(*(roundtrip(port, p) for p in payloads)) == payloads
            await eventually(lambda: (engine.rules.status(rule).total, engine.rules.status(rule).bytes_in,
                                      engine.rules.status(rule).open) == (10, sum(map(len, payloads)), 0),
                             what="counters")
            await eventually(lambda: set(_stdio_clients()) <= before, what="every ssh -W gone")
            refused = engine.rules.find("egress", bad, "master")
            await eventually(lambda: engine.rules.status(refused).state is RuleState.LISTENING, what="listening")
            assert await roundtrip(int(bad.split(":")[1]), b"x") == b""
            await eventually(lambda: engine.rules.status(refused).destinations[0].reason is not None, what="down")
            reason = engine.rules.status(refused).destinations[0].reason
            # the server's words, as the asyncssh transport gives them (console/tunnel/egress.open_failure)
            assert (f"the server 127.0.0.1:{sshd.port} refused a connection to 127.0.0.1:{dead}: connect failed: "
                    "Connection refused (") in reason, reason
    run(body())


def test_without_an_ssh_client_the_unit_says_so(sshd, state, tmp_path, monkeypatch):
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    async def body():
        async with running_engine(sshd, state, {"master": []}) as engine:
            await eventually(lambda: "no `ssh` client" in (unit_of(engine, "master").last_error or ""),
                             what="the reason")
            assert unit_of(engine, "master").state == "retrying"
    run(body())


def test_an_ssh_that_is_dropbears_dbclient_is_named(sshd, state, tmp_path, monkeypatch, dropbear_tools):
    """Appliances with Dropbear often have `ssh` as a link to dbclient, which has no control master."""
    from sshd import find_dropbear

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").symlink_to(find_dropbear("dbclient"))
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")

    async def body():
        async with running_engine(sshd, state, {"master": []}) as engine:
            await eventually(lambda: "needs OpenSSH's ssh" in (unit_of(engine, "master").last_error or ""),
                             what="the reason")
            error = unit_of(engine, "master").last_error
            assert f"{bin_dir}/ssh is 'Dropbear v" in error, error
            assert unit_of(engine, "master").state == "retrying"
    run(body())


def test_a_state_dir_too_long_for_a_socket_path_uses_a_private_dir_of_its_own(sshd, tmp_path):
    from console.core.paths import StatePaths
    from console.tunnel.openssh import run_dir

    state = StatePaths(tmp_path / ("long-" * 20) / "state").prepare()
    here = run_dir(state.root)
    assert not str(here).startswith(str(state.root)) and len(str(here)) < 60
    assert here.stat().st_uid == os.getuid() and stat.S_IMODE(here.stat().st_mode) == 0o700
    assert run_dir(state.root) == here   # the same one each time: a master left behind is found

    async def body():
        async with EchoServer() as echo, running_engine(sshd, state, {"master": [f"app 0 127.0.0.1:{echo.port}"]}) \
                as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up", what="master up")
            assert await roundtrip(forward_port(engine, "master", "app"), b"long") == b"long"
            assert engine.workers["master"]._name("ctl").parent == here
    run(body())


def test_a_state_dir_with_a_space_and_a_percent_sign_works(sshd, tmp_path):
    """ssh splits -o values at spaces and expands % and $ in paths: such a state dir gets a private run dir, and
    the key a link to it there (the key itself is not copied)."""
    import shutil
    import tempfile

    from console.core.paths import StatePaths

    base = Path(tempfile.mkdtemp(prefix="a b%c$d"))   # short: its run/ would fit a socket path
    state = StatePaths(base / "state").prepare()

    async def body():
        async with EchoServer() as echo, running_engine(sshd, state, {"master": [f"app 0 127.0.0.1:{echo.port}"]}) \
                as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up", what="master up")
            assert await roundtrip(forward_port(engine, "master", "app"), b"odd") == b"odd"
            link = engine.workers["master"]._name("key")
            assert link.is_symlink() and link.resolve() == state.unit_key("master").resolve()
            assert not str(link).startswith(str(base))
    try:
        run(body())
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _settings(tmp_path, **changes):
    from console.tunnel.openssh import MasterSettings

    values = dict(ssh="ssh", host="127.0.0.1", port=1, username="u", key_file=tmp_path / "k",
                  known_hosts=tmp_path / "kh", alias="sop-console-unit-x", control=tmp_path / "no-master",
                  keepalive_interval=5.0, keepalive_count_max=3, connect_timeout=10.0)
    values.update(changes)
    return MasterSettings(**values)


def _effective(argv: list[str]) -> dict[str, str]:
    """What ssh makes of a command line (`ssh -G`: the options, nothing connected)."""
    at = argv.index("--")
    done = subprocess.run([*argv[:at], "-G", *argv[at:]], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr
    return dict(line.split(" ", 1) for line in done.stdout.splitlines() if " " in line)


def test_keepalives_in_fractions_of_a_second_are_not_turned_off(tmp_path):
    for interval, sent in ((0.4, "1"), (1.5, "2"), (5, "5"), (0, "0")):
        assert _effective(_settings(tmp_path, keepalive_interval=interval).argv())["serveraliveinterval"] == sent


def test_a_request_with_no_master_never_logs_in_by_itself(tmp_path):
    """With no master on the control socket, ssh would connect to the alias itself with the user's default keys
    and known_hosts: the requests forbid that, and fail at once."""
    settings = _settings(tmp_path)
    said = _effective(settings.control_argv("-W", "127.0.0.1:22"))
    assert said["proxycommand"] == "false" and said["identitiesonly"] == "yes"
    assert said["userknownhostsfile"] == "/dev/null" and said["globalknownhostsfile"] == "/dev/null"
    assert said["identityagent"] == "none" and said["stricthostkeychecking"] == "true"
    assert "identityfile" not in said or said["identityfile"] == "none", said.get("identityfile")

    async def body():
        from console.tunnel.openssh import ControlMaster

        master = ControlMaster(settings, "127.0.0.1:1", on_lost=lambda failure: None)
        started = time.monotonic()
        with pytest.raises(OSError) as refused:
            await master.open_connection("127.0.0.1", 22)
        assert time.monotonic() - started < 5 and "resolve" not in str(refused.value), refused.value
    run(body())


def test_a_changed_key_is_refused_by_ssh_and_named_by_the_engine(sshd, state):
    """The key pinned for ssh is the one known_hosts holds; after the server's key changes ssh refuses it, and the
    engine fetches it to show both fingerprints (host-key-mismatch), never trusting it by itself."""
    async def body():
        async with running_engine(sshd, state, {"master": []}, pin=False, policy="accept-new") as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up", what="up on first contact")
            old = engine.workers["master"]._name("known_hosts").read_text()
            sshd.stop()
            sshd.make_host_key()
            sshd.start()
            await eventually(lambda: unit_of(engine, "master").state == "host-key-mismatch", timeout=15,
                             what="mismatch")
            error = unit_of(engine, "master").last_error
            assert "HOST KEY MISMATCH" in error and "trust master --replace" in error
            assert engine.workers["master"]._name("known_hosts").read_text() == old   # nothing new pinned
    run(body())


def test_the_master_ends_with_a_killed_daemon_and_a_new_daemon_takes_the_ports(sshd, state, tmp_path):
    """SIGKILL leaves the daemon no time to stop ssh: the kernel ends it (PR_SET_PDEATHSIG), the server frees the
    port, and the next daemon listens on it again."""
    port = free_port()
    config = tmp_path / "console.yaml"
    config.write_text(unit_yaml(sshd, {"master": [f"app {port} 127.0.0.1:9"]}))
    authorize_units(sshd, state, parse_config(config.read_text(), str(config)).units)
    command = [sys.executable, "-m", "console", "--state-dir", str(state.root), "--config", str(config), "daemon"]
    status = [sys.executable, "-m", "console", "--state-dir", str(state.root), "--config", str(config), "status"]

    def listening() -> bool:
        done = subprocess.run(status, capture_output=True, text=True, timeout=20)
        return done.returncode == 0 and "listening" in done.stdout

    def ssh_children(pid: int) -> list[int]:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
                if Path(f"/proc/{p}/comm").read_text().strip() == "ssh"]

    daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while not listening():
            assert time.monotonic() < deadline, "the forward never listened"
            time.sleep(0.1)
        (master,) = ssh_children(daemon.pid)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(5)
        deadline = time.monotonic() + 5
        while Path(f"/proc/{master}").exists() and Path(f"/proc/{master}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < deadline, "ssh outlived the daemon"
            time.sleep(0.02)
        daemon = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while not listening():
            assert time.monotonic() < deadline, "the next daemon's forward never listened"
            time.sleep(0.1)
    finally:
        daemon.terminate()
        daemon.wait(10)


def test_counters_are_exact_through_the_relay_and_a_refused_local_service_is_said(sshd, state):
    async def body():
        dead = free_port()
        async with EchoServer() as echo, running_engine(sshd, state, {
                "master": [f"app 0 127.0.0.1:{echo.port}", f"dead 0 127.0.0.1:{dead}"]}) as engine:
            await eventually(lambda: unit_of(engine, "master").state == "up", what="master up")
            payload = os.urandom(3 * 1024 * 1024 + 17)
            assert await roundtrip(forward_port(engine, "master", "app"), payload) == payload
            await eventually(lambda: (fwd_of(engine, "master", "app").bytes_in,
                                      fwd_of(engine, "master", "app").bytes_out,
                                      fwd_of(engine, "master", "app").open,
                                      fwd_of(engine, "master", "app").total) == (len(payload), len(payload), 0, 1),
                             what="exact counters")
            assert await roundtrip(forward_port(engine, "master", "dead"), b"x") == b""
            await eventually(lambda: f"local service 127.0.0.1:{dead} refused a connection"
                             in state.tunnel_log.read_text(), what="the refusal in the log")
            assert fwd_of(engine, "master", "dead").state == "listening"
    run(body())
