"""A unit whose connection is OpenSSH's `ssh` (tunnel.transport: openssh; console/tunnel/openssh.py): the same
worker, states, per-forward reasons, retries and counters as the asyncssh transport's, with three things done
differently:

- connecting: the host keys the engine trusts for the server are pinned for ssh. When it holds none yet (first
  contact, accept-new, or a pin by fingerprint, which names no key), the engine fetches the key and judges it first,
  as the asyncssh transport does; when ssh refuses the key, the engine fetches it again to say whether it is
  unknown or changed (host-key-unknown, host-key-mismatch, with both fingerprints). No check on the way of a
  connection that works: with OpenSSH 9.8+'s PerSourcePenalties every connection that does not log in costs the
  appliance's address a penalty, so a probe before each login would slow recovery down.
- each forward: a relay listening on a Unix socket of its own (console/tunnel/forward_proxy.py, counting), then
  `ssh -O forward -R BIND:PORT:SOCKET` through the master; refused forwards retry on their own as before.
- proxy rules through the unit (console/tunnel/carrier.py) travel through the master too: a TCP connection out
  is an `ssh -W HOST:PORT` multiplexed over it, a port the server listens on is `-O forward -R` to a Unix socket of
  the rule's. UDP rules are refused with the reason (they need our subsystem's framing on asyncssh channels).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from pathlib import Path

import asyncssh

from console.core import announce
from console.core.keys import load_or_create_unit_key
from console.core.known_hosts import fetch_host_key, held_keys, host_key_algorithms
from console.core.paths import atomic_write
from console.tunnel import openssh
from console.tunnel.forward_proxy import ForwardProxy
from console.tunnel import diagnose
from console.tunnel.diagnose import LinkFailed
from console.tunnel.worker import ForwardRuntime, UnitWorker

HUB_WORDS_WAIT = 0.2   # seconds to wait for our hub's reason (on ssh's stderr) after it refused a forward


class OpenSshUnitWorker(UnitWorker):

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pin_fetched: asyncssh.SSHKey | None = None   # the key a pin by fingerprint matched (ssh needs a key)
        self.udp_refusal = (f"unit {self.name} runs on tunnel.transport openssh, which carries TCP only: UDP rules "
                            "through it need tunnel.transport asyncssh")

    # ------------------------------------------------------------------ where its files go

    def _run_dir(self) -> Path:
        return openssh.run_dir(self.env.paths.root)

    def _name(self, kind: str, *parts: str) -> Path:
        digest = hashlib.sha256("\0".join((self.name, *parts)).encode()).hexdigest()[:16]
        return self._run_dir() / f"{kind}-{digest}"

    @property
    def alias(self) -> str:
        return f"sop-console-unit-{self.name}"

    # ------------------------------------------------------------------ connecting

    async def _connect(self) -> openssh.ControlMaster:
        ssh = openssh.ssh_binary()
        if ssh is None:
            raise LinkFailed("tunnel.transport is openssh but this machine has no `ssh` client "
                             "(install openssh-client, or set tunnel.transport: asyncssh)")
        if (wrong := await openssh.not_openssh(ssh)) is not None:
            raise LinkFailed(wrong)
        await asyncio.to_thread(load_or_create_unit_key, self.env.paths, self.name)
        self._host_check = None
        self._lost_reason = None
        keys = await self._trusted_keys()
        pinned = self._name("known_hosts")
        atomic_write(pinned, "".join(f"{self.alias} {key.export_public_key('openssh').decode().strip()}\n"
                                     for key in keys).encode())
        server, tunnel = self.config.server, self.tunnel
        settings = openssh.MasterSettings(
            ssh=ssh, host=server.host, port=server.port, username=self.config.username,
            key_file=self._key_for_ssh(), known_hosts=pinned, alias=self.alias,
            control=self._name("ctl"), keepalive_interval=tunnel.keepalive_interval,
            keepalive_count_max=tunnel.keepalive_count_max, connect_timeout=tunnel.connect_timeout)
        master = openssh.ControlMaster(settings, self.server, on_lost=self._master_lost,
                                       on_remote_debug=self.server_debug)
        try:
            await master.start()
        except openssh.MasterFailed as exc:
            if exc.kind == "auth":
                raise asyncssh.PermissionDenied(str(exc)) from None
            if exc.kind == "host-key":
                await self._judge_refused_key()   # unknown or changed: HostKeyNotVerifiable, said as such
                raise LinkFailed(f"ssh refused the host key of {self.server}, yet the key it presents now is the "
                                 "one trusted (changed back meanwhile?); trying again") from None
            if exc.kind == "not-ssh":
                await self._fetch_key()   # what the server said instead (NotAnSSHServer), when it said anything
            raise LinkFailed(str(exc)) from None
        return master

    def _key_for_ssh(self) -> Path:
        """The unit's private key as ssh can be given it: its own path, or a link to it in the run dir when that
        path is not safe for ssh (a space, %, $: openssh.safe_for_ssh). The key itself is never copied."""
        key = self.env.paths.unit_key(self.name)
        if openssh.safe_for_ssh(key):
            return key
        link = self._name("key")
        if not link.is_symlink() or os.readlink(link) != str(key):
            with contextlib.suppress(FileNotFoundError):
                link.unlink()
            link.symlink_to(key)
        return link

    async def _fetch_key(self) -> asyncssh.SSHKey:
        """The key the server presents now, fetched by the engine; NotAnSSHServer with what it said instead."""
        server = self.config.server
        greeting = diagnose.Greeting()
        try:
            key, _software = await fetch_host_key(server, host_key_algorithms(server, self.env.known_hosts),
                                                  self.tunnel.connect_timeout, tunnel=greeting)
        except (asyncssh.Error, OSError) as exc:
            not_ssh = diagnose.not_ssh(greeting, server.address)
            if not_ssh is not None:
                raise not_ssh from exc
            raise
        if key is None:
            raise LinkFailed(f"server {self.server} presented no host key")
        return key

    async def _trusted_keys(self) -> list[asyncssh.SSHKey]:
        """The keys to pin for ssh: the pinned key, else those known_hosts holds for the server; with none (first
        contact, or a pin by fingerprint) the engine fetches and judges the key itself first."""
        keys = held_keys(self.config.server, self.env.known_hosts)
        if keys:
            return keys
        if self._pin_fetched is not None and self.config.server.host_key:
            return [self._pin_fetched]
        key = await self._fetch_key()
        if not self._validate_host_key(key):
            raise asyncssh.HostKeyNotVerifiable(f"host key of {self.server} not trusted")
        if self.config.server.host_key:
            self._pin_fetched = key
        return [key]

    async def _judge_refused_key(self) -> None:
        """ssh refused the server's key: fetch it and say why (unknown, or changed: HostKeyNotVerifiable with the
        check kept for _host_key_refused); a key trusted after all (it changed back meanwhile) is tried again."""
        self._pin_fetched = None
        key = await self._fetch_key()
        if not self._validate_host_key(key):
            raise asyncssh.HostKeyNotVerifiable(f"host key of {self.server} not trusted")

    def _master_lost(self, failure: openssh.MasterFailed | None) -> None:
        self._lost_reason = LinkFailed(str(failure)) if failure is not None else None

    # ------------------------------------------------------------------ forwards

    async def _listen(self, conn: openssh.ControlMaster, fr: ForwardRuntime) -> openssh.MasterForward:
        cfg = fr.config
        if fr.udp is not None:
            raise OSError(self.udp_refusal)
        if fr.factory is not None:
            raise OSError("a forward with its own session factory needs tunnel.transport asyncssh")
        socket = self._name("fw", cfg.name)
        proxy = ForwardProxy(socket, cfg.local_host, cfg.local_port, fr.stats,
                             on_change=lambda: self._publish_traffic(fr),
                             on_refused=lambda reason: self.log_event(f"forward {cfg.name}: {reason}"))
        await proxy.start()
        try:
            return await conn.listen(cfg.remote_bind, cfg.remote_port, socket, proxy)
        except BaseException:
            if announce.is_hub(self.server_software):   # its reason comes on ssh's stderr: let it arrive
                deadline = asyncio.get_running_loop().time() + HUB_WORDS_WAIT
                while cfg.remote_port not in self.hub_refusals and asyncio.get_running_loop().time() < deadline:
                    await asyncio.sleep(0.01)
            raise

    async def _close_connection(self) -> None:
        await super()._close_connection()   # the master's end closes the relays of its forwards too
        with contextlib.suppress(OSError):
            self._name("ctl").unlink()
