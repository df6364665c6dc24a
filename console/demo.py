"""`sop-console demo`: everything on loopback in one process, with no setup.

The daemon with a hub (our asyncssh server) whose clients are the demo units, three demo services (a small web
page and an echo "app" port, each on 127.0.0.1, 127.0.0.2 and 127.0.0.3, and a UDP echo), and master and clone
forwarding both through the hub and announcing them. Two endpoints: the hub (`default`, available) and `spare`, a
closed loopback port (unavailable, with its reason). Proxy rules, all via local: an egress rule to the web page, a
UDP rule to the UDP echo, and the gateway plan `lab` (hosts 1-3 of 127.0.0.0/24, services web and app: six ports).
It runs in the console (`--plain`: it prints the live status and the tunnel log instead).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass
from typing import TextIO
from collections.abc import Callable

from console.core.config import (Config, EndpointConfig, ForwardConfig, HubConfig, ProxyConfig, ServerConfig,
                                 TunnelConfig, UnitConfig)
from console.core.events import ForwardTraffic, LogLine
from console.core.keys import load_or_create_key, load_or_create_unit_key, public_line
from console.core.paths import StatePaths
from console.core.rules import GatewayPlan, make_rule
from console.core.states import ForwardState, RuleState
from console.daemon import Daemon
from console.core.store import Store
from console.hub.registry import Registry
from console.hub.server import Hub

DEMO_USERS = {"master": "sop001", "clone": "sop002"}
DEMO_HOSTS = ("127.0.0.1", "127.0.0.2", "127.0.0.3")  # the gateway plan's hosts 1-3: the web and app services answer
HUB_PORTS = 16               # the demo hub's client ports
TRAFFIC_INTERVAL = 2.0
# A service's handler that is cancelled when the loop ends (a connection still open as the demo stops) must end
# quietly: Python 3.11's start_server callback calls task.exception() on it, which raises CancelledError into the
# loop's exception handler and prints a traceback (3.12 checks task.cancelled() first).
QUIET_ENDINGS = (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError)


async def _http_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        await reader.readuntil(b"\r\n\r\n")
        host = writer.get_extra_info("sockname")[0]  # which of the gateway plan's hosts was reached
        body = b"SOP demo unit: filemanager, netDesktop (host %s)\n" % host.encode()
        writer.write(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        await writer.drain()
    except QUIET_ENDINGS:
        pass
    finally:
        writer.close()


async def echo_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except QUIET_ENDINGS:
        pass
    finally:
        writer.close()


class UdpEcho(asyncio.DatagramProtocol):
    """The demo's UDP service: each datagram back to whoever sent it."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.DatagramTransport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)


@dataclass
class DemoWorld:
    daemon: Daemon
    services: list[asyncio.AbstractServer]
    config: Config
    udp: asyncio.DatagramTransport | None = None
    closed: bool = False

    @property
    def hub(self) -> Hub:
        assert self.daemon.engine.hub is not None
        return self.daemon.engine.hub

    async def close(self) -> None:
        """Idempotent: the console's own cleanup and the demo's may both call it."""
        if self.closed:
            return
        self.closed = True
        await self.daemon.close()
        for server in self.services:
            server.close()
        if self.udp is not None:
            self.udp.close()


async def build_demo(paths: StatePaths, *, echo_log: bool = False) -> DemoWorld:
    """Start the services and the daemon, which runs the hub and both units; return once they run (the units
    connect on their own). The units are the hub's clients, as a customer's would be."""
    paths.prepare()
    web = await _serve_on_demo_hosts(_http_service)
    app = await _serve_on_demo_hosts(echo_service)
    web_port = web.sockets[0].getsockname()[1]
    app_port = app.sockets[0].getsockname()[1]
    udp, _ = await asyncio.get_running_loop().create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", 0))
    udp_port = udp.get_extra_info("sockname")[1]

    # The daemon's own hub key and store, made here first: the units pin the key, the clients are registered.
    host_key = await asyncio.to_thread(load_or_create_key, paths.hub_key, "sop-console-hub")
    unit_keys = {unit: await asyncio.to_thread(load_or_create_unit_key, paths, unit) for unit in DEMO_USERS}
    # One block of free ports: the hub's client ports, then the rules' (an egress rule, a UDP rule, the gateway
    # plan's six), then the hub's own port, so no two of them meet.
    low, _ = _free_range(HUB_PORTS + 9, udp=True)
    high = low + HUB_PORTS - 1
    egress_port, udp_rule_port, gateway_base = high + 1, high + 2, high + 1   # the plan: base + n*2 + k, n = 1-3
    hub_port = high + 9
    store = Store(paths.database)
    registry = Registry(store, (low, high), default_quota=2)  # two ports each; port 0 in the forwards: the hub picks
    for unit, key in unit_keys.items():
        if registry.get(DEMO_USERS[unit]) is not None:
            registry.remove(DEMO_USERS[unit])  # fresh ports from this run's range
        registry.add(DEMO_USERS[unit], public_line(key))
    store.close()

    server = ServerConfig(host="127.0.0.1", port=hub_port, host_key=public_line(host_key))
    units = {
        unit: UnitConfig(unit, user, server, (
            ForwardConfig("http", 0, "127.0.0.1", web_port, service=f"http://127.0.0.1:{web_port}/"),
            ForwardConfig("app", 0, "127.0.0.1", app_port),
        ))
        for unit, user in DEMO_USERS.items()
    }
    # Two endpoints: the demo hub as `default` (available: both units log in with their keys) and `spare`, a
    # loopback port nothing listens on (unavailable: "connection refused by 127.0.0.1:PORT", with its hint).
    spare = EndpointConfig(host="127.0.0.1", port=_free_range(1)[0], name="spare",
                           comment="a loopback port nothing listens on: how an unavailable endpoint looks")
    # Proxy rules, all via local: they work without the unit transport. The gateway plan maps hosts 1-3 of
    # 127.0.0.0/24 (the loopback addresses the web and app services answer on) as the de.NBI seed does.
    proxy = ProxyConfig(rules=(
        make_rule("ingress", f"udp:{udp_rule_port}:127.0.0.1:{udp_port}", origin="proxy.ingress[0]"),
        make_rule("egress", f"tcp:{egress_port}:127.0.0.1:{web_port}", origin="proxy.egress[0]"),
    ), gateways=(GatewayPlan("lab", "127.0.0.0/24", gateway_base, (web_port, app_port), (1, len(DEMO_HOSTS))),))
    config = Config(units=units, server=server,
                    tunnel=TunnelConfig(keepalive_interval=5, keepalive_count_max=3, retry_min=0.1, retry_max=5),
                    hub=HubConfig("127.0.0.1", hub_port, low, high, 2, "127.0.0.1"), source="<demo>",
                    endpoints={"spare": spare}, proxy=proxy)
    daemon = Daemon(config, paths, None, echo_log=echo_log)
    await daemon.start()
    return DemoWorld(daemon, [web, app], config, udp)


async def _serve_on_demo_hosts(handler) -> asyncio.AbstractServer:
    """A service on one port of each of DEMO_HOSTS (the gateway plan's hosts), loopback only."""
    for _ in range(20):
        port = _free_range(1)[0]
        try:
            return await asyncio.start_server(handler, list(DEMO_HOSTS), port)
        except OSError:  # taken on another of the hosts meanwhile: another port
            continue
    raise OSError(f"no port free on all of {', '.join(DEMO_HOSTS)} for a demo service")


def _free_range(count: int, udp: bool = False) -> tuple[int, int]:
    """A block of `count` loopback ports that bind now (for TCP, and for UDP too with `udp`)."""
    import random
    import socket

    kinds = (socket.SOCK_STREAM, socket.SOCK_DGRAM) if udp else (socket.SOCK_STREAM,)
    for _ in range(200):
        low = random.randrange(20000, 60000 - count)
        try:
            for port in range(low, low + count):
                for kind in kinds:
                    with socket.socket(socket.AF_INET, kind) as sock:
                        sock.bind(("127.0.0.1", port))
        except OSError:
            continue
        return low, low + count - 1
    raise OSError("no free block of loopback ports for the demo")


async def demo_traffic(world: DemoWorld) -> None:
    """Touch every listening forward and proxy rule now and then, so the counters move."""
    while True:
        for unit in world.daemon.engine.status().units:
            for fwd in unit.forwards:
                port = fwd.port
                if fwd.state is not ForwardState.LISTENING or port is None:
                    continue
                await _touch_tcp(port, b"GET / HTTP/1.0\r\n\r\n" if fwd.name == "http" else b"ping\n")
        for rule in world.daemon.engine.rules.list():
            if rule.source == "forward" or rule.state is not RuleState.LISTENING:
                continue
            port = int(rule.listener.rsplit(":", 1)[1])
            if rule.protocol == "udp":
                await _touch_udp(port, b"ping\n")
            else:
                await _touch_tcp(port, b"GET / HTTP/1.0\r\n\r\n")  # the web page answers it, the echo echoes it
        await asyncio.sleep(TRAFFIC_INTERVAL)


async def _touch_tcp(port: int, payload: bytes) -> None:
    with contextlib.suppress(OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 2)
        writer.write(payload)
        await asyncio.wait_for(reader.read(4096), 2)
        writer.close()


async def _touch_udp(port: int, payload: bytes) -> None:
    loop = asyncio.get_running_loop()
    answered = loop.create_future()

    class Asker(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
            if not answered.done():
                answered.set_result(data)

    with contextlib.suppress(OSError, asyncio.TimeoutError):
        transport, _ = await loop.create_datagram_endpoint(Asker, remote_addr=("127.0.0.1", port))
        try:
            transport.sendto(payload)
            await asyncio.wait_for(answered, 2)
        finally:
            transport.close()


def rules_text(world: DemoWorld) -> str:
    """The demo's proxy rules, one line each (a gateway plan on one line), for the plain demo's first lines."""
    lines = [f"  {r.direction} {r.protocol} {r.listener} -> {r.destination} via {r.via}"
             for r in world.daemon.engine.rules.list() if r.source == "config"]
    lines += [f"  gateway {g.name}: {g.formula}" for g in world.config.proxy.gateways]
    return "Proxy rules:\n" + "\n".join(lines)


async def run_demo(paths: StatePaths, *, duration: float | None = None, out: TextIO = sys.stdout,
                   on_ready: Callable[[DemoWorld], None] | None = None) -> int:
    world = await build_demo(paths)
    engine = world.daemon.engine
    sub = engine.bus.subscribe()
    print(f"SOP Console demo: hub on 127.0.0.1:{world.hub.port}, state in {paths.root}", file=out)
    print(f"Attach from another terminal: sop-console --state-dir {paths.root} status", file=out)
    print(rules_text(world), file=out)
    print("Ctrl-C stops the demo.\n", file=out, flush=True)
    if on_ready:
        on_ready(world)
    traffic = asyncio.create_task(demo_traffic(world))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    if duration is not None:
        loop.call_later(duration, stop.set)
    last = ""
    try:
        while not stop.is_set():
            try:
                event = await asyncio.wait_for(sub.get(), 1.0)
            except TimeoutError:
                event = None
            if isinstance(event, LogLine):
                print(event.line, file=out, flush=True)
            text = engine.status().render()
            if text != last and not isinstance(event, ForwardTraffic):
                print("\n" + text + "\n", file=out, flush=True)
                last = text
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        traffic.cancel()
        sub.close()
        print("\n" + engine.status().render(), file=out, flush=True)
        await world.close()
    return 0
