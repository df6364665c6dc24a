"""The sshd check against real OpenSSH servers on 127.0.0.1, each started with `-f` its own config: read through
sshd -T as root and through a real password-less sudo, read from the files by a user without sudo, fixed (drop-in
or top of the file, rolled back when sshd -t refuses), and the fixed server really serving what was flagged: a
forward that asks for 0.0.0.0 listens on 0.0.0.0 after the reload."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import asyncssh
import pytest
from sshd import Sshd, find_sshd
from support import eventually, run

from console.core.errors import OperationFailed
from console.core.sshd_fix import BACKUP_SUFFIX, DROPIN_NAME, sshd_fix_script
from console.core.sshd_settings import ForwardNeeds, Listen, judge, parse_effective, render, stock_settings
from console.core.states import SshdSettingState
from console.core.status import SshdSetting
from console.tunnel.sshd_check import check_sshd, fix_sshd, run_fix_script

IN_CI = bool(os.environ.get("CI"))
CHANGE, OK = SshdSettingState.CHANGE, SshdSettingState.OK
LOOPBACK_ONLY = ({"127.0.0.1"}, {"127.0.0.1", "::1"})  # what sshd binds for a forward it keeps on loopback
NEEDS = ForwardNeeds((Listen("0.0.0.0", 0, "unit master forward http"),
                      Listen("127.0.0.1", 0, "unit master forward ssh")))


@pytest.fixture(autouse=True)
def _peers():
    if find_sshd() is None:
        if IN_CI:
            pytest.fail("sshd is missing in CI: make test installs openssh-server")
        pytest.skip("sshd not installed")
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the sshd check tests need root in CI")
        pytest.skip("the test sshd and its users need root")


@pytest.fixture
def client_key(tmp_path) -> tuple[asyncssh.SSHKey, str]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return key, key.export_public_key().decode()


@pytest.fixture
def shared_dir():
    """A folder every user may enter (pytest's tmp dirs are root-only): a user without sudo reads the config."""
    base = Path(tempfile.mkdtemp(prefix="sop-sshd-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _login_with_key(name: str, home: Path, public: str) -> None:
    ssh_dir = home / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    (ssh_dir / "authorized_keys").write_text(public + "\n")
    subprocess.run(["chown", "-R", f"{name}:{name}", str(ssh_dir)], check=True)


@pytest.fixture
def sudo_user(local_user, client_key):
    """The throwaway user (tests/conftest.py) with our key and a real password-less sudo (sudoers.d entry,
    checked with visudo), both removed at teardown."""
    if shutil.which("sudo") is None:
        if IN_CI:
            pytest.fail("sudo is missing in CI: make test installs it")
        pytest.skip("sudo not installed (apt-get install sudo)")
    name, _, home = local_user
    _login_with_key(name, home, client_key[1])
    entry = Path("/etc/sudoers.d") / f"sop-test-{name}"
    entry.write_text(f"{name} ALL=(ALL) NOPASSWD: ALL\n")
    os.chmod(entry, 0o440)
    try:
        subprocess.run(["visudo", "-cqf", str(entry)], check=True)
        yield name
    finally:
        entry.unlink(missing_ok=True)


@pytest.fixture
def plain_user(local_user, client_key):
    """The throwaway user with our key and no sudo."""
    name, _, home = local_user
    _login_with_key(name, home, client_key[1])
    return name


async def connect(server: Sshd, user: str, key: asyncssh.SSHKey) -> asyncssh.SSHClientConnection:
    trusted = asyncssh.import_public_key(server.host_public_key)
    return await asyncssh.connect("127.0.0.1", server.port, username=user, client_keys=[key],
                                  known_hosts=([trusted], [], []), config=None, agent_path=None, connect_timeout=10)


def listening_on(port: int) -> set[str]:
    """The addresses a TCP port listens on, from the kernel's own tables."""
    found = set()
    for table, width in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            address, hex_port = fields[1].split(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:
                raw = bytes.fromhex(address)
                if width == 8:
                    found.add(socket.inet_ntop(socket.AF_INET, raw[::-1]))
                else:
                    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                    found.add(socket.inet_ntop(socket.AF_INET6, words))
    return found


async def forward_binds(conn: asyncssh.SSHClientConnection, host: str) -> set[str]:
    """Ask the server for a remote forward on `host`, port chosen by it: where it really listens."""
    listener = await conn.forward_remote_port(host, 0, "127.0.0.1", 9)
    try:
        return listening_on(listener.get_port())
    finally:
        listener.close()


@pytest.fixture
def serve(tmp_path, client_key):
    """serve(**Sshd options, kind=Sshd, root=folder): a test sshd started, root let in with our key, stopped at
    teardown."""
    servers: list[Sshd] = []

    def start(kind=Sshd, root: Path | None = None, **options) -> Sshd:
        server = kind(root or tmp_path / f"sshd{len(servers)}", **options).start()
        servers.append(server)
        server.authorize("root", client_key[1])
        return server
    yield start
    for server in servers:
        server.stop()


# ---------------------------------------------------------------------------------------------------- checking

def test_gateway_ports_no_is_flagged_and_nothing_changes_without_fix(client_key, serve):
    key, _ = client_key
    server = serve(extra="GatewayPorts no")
    original = server.config_path.read_bytes()

    async def body():
        async with await connect(server, "root", key) as conn:
            return await check_sshd(conn, "default", NEEDS)
    check = run(body())
    assert check.source == "sshd -T" and check.privilege == "root"
    assert check.how == "effective settings from sshd -T (Match evaluated for user root from 127.0.0.1)"
    assert check.config_file == str(server.config_path) and check.listener_pid == server.proc.pid
    gateway = next(s for s in check.settings if s.keyword == "GatewayPorts")
    assert gateway.state is CHANGE and gateway.lines == ["GatewayPorts clientspecified"]
    assert [s.keyword for s in check.needs_change] == ["GatewayPorts", "ClientAliveInterval"]
    assert "--fix writes these lines" in render(check)
    assert server.config_path.read_bytes() == original
    assert not Path(str(server.config_path) + BACKUP_SUFFIX).exists()


def test_match_blocks_are_evaluated_for_the_units_account(client_key, serve):
    """Logged in as root, judged for the account the units use: sshd -T -C evaluates its Match block."""
    key, _ = client_key
    server = serve(extra="GatewayPorts clientspecified\nClientAliveInterval 10",
                   match="Match User tunnel\n  GatewayPorts no\n  AllowTcpForwarding local")

    async def body():
        async with await connect(server, "root", key) as conn:
            return (await check_sshd(conn, "default", NEEDS),
                    await check_sshd(conn, "default", NEEDS, username="tunnel"))
    as_root, as_units = run(body())
    assert as_root.needs_change == []
    assert [(s.keyword, s.value) for s in as_units.needs_change] == [("GatewayPorts", "no"),
                                                                      ("AllowTcpForwarding", "local")]
    assert "for user tunnel" in as_units.how


# ---------------------------------------------------------------------------------------------------- fixing

def test_fix_through_sudo_makes_a_forward_listen_beyond_loopback(client_key, sudo_user, serve):
    key, _ = client_key
    server = serve(extra="GatewayPorts no")
    original = server.config_path.read_text()

    async def body():
        async with await connect(server, sudo_user, key) as conn:
            assert await forward_binds(conn, "0.0.0.0") in LOOPBACK_ONLY  # what GatewayPorts no does
            fixed = await fix_sshd(conn, "default", NEEDS)
            again = await fix_sshd(conn, "default", NEEDS)
        async with await connect(server, sudo_user, key) as conn:  # "reloaded" means it listens again
            return fixed, again, await forward_binds(conn, "0.0.0.0"), await forward_binds(conn, "127.0.0.1")
    fixed, again, wide, narrow = run(body())
    assert fixed.privilege == "sudo" and fixed.source == "sshd -T"
    assert [s.keyword for s in fixed.before if s.state is CHANGE] == ["GatewayPorts", "ClientAliveInterval"]
    assert fixed.needs_change == []
    assert f"reloaded sshd (SIGHUP to pid {server.proc.pid})" in fixed.fix
    assert wide == {"0.0.0.0"} and narrow == {"127.0.0.1"}  # clientspecified: each forward decides
    text = server.config_path.read_text()
    assert text.startswith("# sop-console: begin") and "\nGatewayPorts clientspecified\n" in text
    assert text.endswith(original)  # nothing of the operator's own lines changed
    assert Path(str(server.config_path) + BACKUP_SUFFIX).read_text() == original
    effective = server.effective()
    assert (effective["gatewayports"], effective["clientaliveinterval"]) == ("clientspecified", "15")
    assert again.fix == "nothing to change" and server.config_path.read_text() == text
    assert "GatewayPorts: no -> clientspecified (ok)" in render(fixed)


class IncludeFirst(Sshd):
    """A test sshd whose config begins, as Debian's does, with an Include of its sshd_config.d."""

    def write_config(self) -> None:
        super().write_config()
        drop = self.root / "sshd_config.d"
        drop.mkdir(exist_ok=True)
        self.config_path.write_text(f"Include {drop}/*.conf\n" + self.config_path.read_text())


def test_fix_writes_a_drop_in_when_the_include_comes_first(client_key, serve):
    key, _ = client_key
    server = serve(IncludeFirst)
    original = server.config_path.read_bytes()

    async def body():
        async with await connect(server, "root", key) as conn:
            return await fix_sshd(conn, "default", NEEDS)
    fixed = run(body())
    dropin = server.root / "sshd_config.d" / DROPIN_NAME
    assert fixed.needs_change == [] and f"wrote {dropin}" in fixed.fix
    assert server.config_path.read_bytes() == original
    assert dropin.read_text().splitlines()[1:] == ["GatewayPorts clientspecified", "ClientAliveInterval 15",
                                                   "ClientAliveCountMax 3"]


def test_an_invalid_config_is_left_alone_and_sshd_keeps_running(client_key, serve):
    key, _ = client_key
    server = serve(IncludeFirst)
    (server.root / "sshd_config.d" / "60-broken.conf").write_text("NotAnOption yes\n")  # after sshd started
    original = server.config_path.read_bytes()

    async def body():
        async with await connect(server, "root", key) as conn:
            with pytest.raises(OperationFailed) as caught:
                await fix_sshd(conn, "default", NEEDS)
        async with await connect(server, "root", key) as conn:  # the same sshd still serves
            assert (await conn.run("true")).exit_status == 0
        return str(caught.value)
    message = run(body())
    assert message.startswith("the fix changed nothing: the configuration is invalid already")
    assert "NotAnOption" in message
    assert server.config_path.read_bytes() == original
    assert not (server.root / "sshd_config.d" / DROPIN_NAME).exists()


def test_a_change_sshd_refuses_is_rolled_back(client_key, sudo_user, serve):
    key, _ = client_key
    server = serve(extra="GatewayPorts no")
    original = server.config_path.read_bytes()
    # a value sshd -t refuses; the check never proposes one, so it is made here
    bad = SshdSetting("GatewayPorts", CHANGE, "no", "test", ["GatewayPorts sometimes"])
    script = sshd_fix_script([bad], str(server.config_path), server.proc.pid)

    async def body():
        async with await connect(server, sudo_user, key) as conn:
            with pytest.raises(OperationFailed) as caught:
                await run_fix_script(conn, script, "sudo")
        async with await connect(server, sudo_user, key) as conn:
            assert await forward_binds(conn, "0.0.0.0") in LOOPBACK_ONLY  # still the old settings
        return str(caught.value)
    message = run(body())
    assert message.startswith("the fix was rolled back: sshd -t refused the new settings")
    assert "sometimes" in message and f"{server.config_path} is restored" in message
    assert server.config_path.read_bytes() == original
    assert server.effective()["gatewayports"] == "no"


# ---------------------------------------------------------------------------------------------------- without sudo

def test_without_sudo_the_files_are_read_and_said_so(shared_dir, client_key, plain_user, serve):
    key, _ = client_key
    drop = shared_dir / "sshd" / "conf.d"
    drop.mkdir(parents=True)
    (drop / "10-unused.conf").write_text("UnusedConnectionTimeout 10m\n")
    server = serve(root=shared_dir / "sshd", extra=f"Include {drop}/*.conf\nGatewayPorts no\nClientAliveInterval 5",
                   match="Match Address 10.0.0.0/8\n  GatewayPorts yes")

    async def body():
        async with await connect(server, plain_user, key) as conn:
            check = await check_sshd(conn, "default", NEEDS)
            with pytest.raises(OperationFailed) as caught:
                await fix_sshd(conn, "default", NEEDS)
            server.config_path.chmod(0o600)
            with pytest.raises(OperationFailed) as unreadable:
                await check_sshd(conn, "default", NEEDS)
            return check, str(caught.value), str(unreadable.value)
    check, refused, unreadable = run(body())
    assert check.source == "files" and check.privilege == "none"
    assert check.how == f"read from {server.config_path} and 1 included file; Match blocks not evaluated"
    assert any("'Match Address 10.0.0.0/8'" in note and "GatewayPorts yes" in note for note in check.notes)
    assert [(s.keyword, s.value) for s in check.needs_change] == [("GatewayPorts", "no"),
                                                                   ("UnusedConnectionTimeout", "600")]
    assert server.effective()["unusedconnectiontimeout"] == "600"  # sshd reads the included file the same
    assert "(needs root or password-less sudo on the server)" in render(check)
    assert refused.startswith("--fix needs root or password-less sudo")
    assert unreadable.startswith(f"cannot read {server.config_path} as the login user")


# ---------------------------------------------------------------------------------------------------- the script alone

def _script(config: Path, pid: int | None = None) -> str:
    settings = [SshdSetting("GatewayPorts", CHANGE, "no", "", ["GatewayPorts clientspecified"]),
                SshdSetting("ClientAliveInterval", CHANGE, "0 x 3", "", ["ClientAliveInterval 15",
                                                                         "ClientAliveCountMax 3"])]
    return sshd_fix_script(settings, str(config), pid)


def _sh(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    path = tmp_path / "fix.sh"
    path.write_text(script)
    return subprocess.run(["sh", str(path)], capture_output=True, text=True, timeout=30)


def test_the_script_alone_on_a_copy_writes_once_and_says_nothing_was_reloaded(tmp_path):
    """What setup-auth's script does on a server nobody has read: the lines a stock sshd needs."""
    server = Sshd(tmp_path / "sshd", match="Match User nobody\n  GatewayPorts no")
    server.write_config()
    copy = tmp_path / "copy" / "sshd_config"
    copy.parent.mkdir()
    copy.write_text(server.config_path.read_text().replace(f"PidFile {server.root}/sshd.pid",
                                                           f"PidFile {tmp_path}/nobody.pid"))
    script = sshd_fix_script(stock_settings(NEEDS), str(copy), None)
    first = _sh(script, tmp_path)
    assert first.returncode == 4, first
    assert "put the lines at the top" in first.stdout and "no running sshd was found" in first.stdout
    written = copy.read_text()
    lines = written.splitlines()
    assert lines[1:4] == ["GatewayPorts clientspecified", "ClientAliveInterval 15", "ClientAliveCountMax 3"]
    assert lines.index("Match User nobody") > lines.index("# sop-console: end")  # never after a Match
    second = _sh(script, tmp_path)
    assert second.returncode == 0 and "nothing to change" in second.stdout
    assert copy.read_text() == written
    effective = subprocess.run([server.binary, "-T", "-f", str(copy)], capture_output=True, text=True, check=True)
    assert [s.keyword for s in judge(parse_effective(effective.stdout), NEEDS) if s.state is CHANGE] == []


def test_the_script_alone_reloads_the_running_sshd_from_its_pid_file(tmp_path, client_key, serve):
    key, _ = client_key
    server = serve()
    done = _sh(_script(server.config_path), tmp_path)  # no pid: what setup-auth's script does
    assert done.returncode == 0, done
    assert f"reloaded sshd (SIGHUP to pid {server.proc.pid} from {server.root}/sshd.pid)" in done.stdout

    async def body():
        async with await connect(server, "root", key) as conn:
            return await forward_binds(conn, "0.0.0.0")
    assert run(body()) == {"0.0.0.0"}


# -------------------------------------------------------------------------------------------- what the judge says

def test_forwards_are_not_sessions(client_key, serve):
    """MaxSessions 0: the check cannot run its commands, yet remote forwards work (as the judge says)."""
    key, _ = client_key
    server = serve(extra="MaxSessions 0\nGatewayPorts clientspecified")

    async def body():
        async with await connect(server, "root", key) as conn:
            binds = [await forward_binds(conn, "127.0.0.1") for _ in range(3)]
            with pytest.raises(OperationFailed) as caught:
                await check_sshd(conn, "default", NEEDS)
            return binds, str(caught.value)
    binds, message = run(body())
    assert all(bind == {"127.0.0.1"} for bind in binds) and len(binds) == 3
    assert message.startswith("the server refused a session for the check's commands")


def test_unused_connection_timeout_cuts_a_forward_only_session(client_key, serve):
    """Why the judge flags UnusedConnectionTimeout: a -R listener is not an open channel (OpenSSH 9.2+)."""
    key, _ = client_key
    server = serve(extra="UnusedConnectionTimeout 1")

    async def body():
        conn = await connect(server, "root", key)
        listener = await conn.forward_remote_port("127.0.0.1", 0, "127.0.0.1", 9)
        port = listener.get_port()
        await eventually(lambda: conn.is_closed(), timeout=15, what="sshd to cut the forward-only session")
        return port
    port = run(body())
    assert listening_on(port) == set()


def test_what_the_server_sends_is_bounded_in_size_and_time(client_key, serve):
    from console.tunnel.sshd_check import _run

    key, _ = client_key
    server = serve()

    async def body():
        async with await connect(server, "root", key) as conn:
            _, out, _ = await asyncio.wait_for(_run(conn, "yes", limit=1000), 20)  # never ends by itself
            with pytest.raises(OperationFailed) as caught:
                await check_sshd(conn, "default", NEEDS, timeout=0.001)
            return out, str(caught.value)
    out, message = run(body())
    assert out == b"y\n" * 500
    assert message == "the server did not answer the sshd check within 0.001 s"


@pytest.mark.parametrize("layout, where", [
    ("include first", "drop-in"),
    ("set before the include", "top"),        # sshd takes the first value: a drop-in would lose
    ("earlier drop-in sets it", "top"),       # 10-other.conf is read before 50-sop-console.conf
    ("include inside a match", "top"),        # applies to that Match only
])
def test_the_script_writes_where_sshd_reads_it_first(tmp_path, layout, where):
    server = Sshd(tmp_path / "sshd")
    server.write_config()
    conf = tmp_path / "copy" / "sshd_config"
    drop = conf.parent / "sshd_config.d"
    drop.mkdir(parents=True)
    body = server.config_path.read_text().replace(f"PidFile {server.root}/sshd.pid", f"PidFile {tmp_path}/none.pid")
    include = f"Include {drop}/*.conf\n"
    text = {"include first": include + body,
            "set before the include": "GatewayPorts no\n" + include + body,
            "earlier drop-in sets it": include + body,
            "include inside a match": body + "Match User nobody\n  " + include}[layout]
    if layout == "earlier drop-in sets it":
        (drop / "10-other.conf").write_text("GatewayPorts yes\n")
    conf.write_text(text)
    done = _sh(_script(conf), tmp_path)
    assert done.returncode == 4, done  # written and valid; no sshd runs with this copy
    dropin = drop / DROPIN_NAME
    if where == "drop-in":
        assert conf.read_text() == text and dropin.exists()
    else:
        assert conf.read_text().endswith(text) and conf.read_text().startswith("# sop-console: begin")
        assert not dropin.exists()
    effective = subprocess.run([server.binary, "-T", "-f", str(conf)], capture_output=True, text=True, check=True)
    values = dict(line.split(" ", 1) for line in effective.stdout.splitlines() if " " in line)
    assert (values["gatewayports"], values["clientaliveinterval"]) == ("clientspecified", "15")  # ours win


def test_a_later_script_merges_with_what_an_earlier_one_wrote(tmp_path):
    server = Sshd(tmp_path / "sshd")
    server.write_config()
    conf = tmp_path / "sshd_config"
    conf.write_text(server.config_path.read_text().replace(f"PidFile {server.root}/sshd.pid",
                                                           f"PidFile {tmp_path}/none.pid"))
    assert _sh(_script(conf), tmp_path).returncode == 4
    later = sshd_fix_script([SshdSetting("GatewayPorts", CHANGE, "", "", ["GatewayPorts yes"]),
                             SshdSetting("UnusedConnectionTimeout", CHANGE, "", "", ["UnusedConnectionTimeout none"])],
                            str(conf), None)
    assert _sh(later, tmp_path).returncode == 4
    lines = conf.read_text().splitlines()
    assert lines[:6] == ["# sop-console: begin (lines for reverse tunnels; they stay first because sshd takes the "
                         "first value)", "GatewayPorts yes", "ClientAliveInterval 15", "ClientAliveCountMax 3",
                         "UnusedConnectionTimeout none", "# sop-console: end"]
    assert lines.count("# sop-console: begin (lines for reverse tunnels; they stay first because sshd takes the "
                       "first value)") == 1
