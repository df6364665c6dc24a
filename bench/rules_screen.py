"""9 Rules with a 762-port gateway plan (hosts 1-254 of 127.0.0.0/24 x 3 echo services, each answering on all 254
addresses), a daemon in this process and the console headless at 80x24 on its control socket:

1. list: one `proxy.list` of the 763 rules, asked and read back by the console (ms, median of 10).
2. shown: from `9` until the plan's line is on screen (ms). Target (ours): under 1 s.
3. opened: `enter` on the plan until its 762 ports are rows (ms). Target (ours): under 1 s.
4. flood: for --seconds, connections through every port of the plan in turn (a round trip each, from a thread):
   the daemon says `traffic` for each port with moving counters once a second (762 events a second), the console
   fetches the list again; fetches a second (target: 1, the daemon's traffic pace), and seconds from the flood's
   end until the plan's line shows the daemon's total (target: under 2 s).

    .venv/bin/python bench/rules_screen.py [--seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import tempfile
import threading
import time
from pathlib import Path

from common import table

from console.core.config import parse_config
from console.core.paths import StatePaths
from console.daemon import Daemon
from console.demo import _free_range, echo_service
from console.ui.app import SopConsole
from console.ui.screens.rules import RulesScreen

HOSTS = [f"127.0.0.{n}" for n in range(1, 255)]


def load() -> str:
    return "load %.1f/%.1f/%.1f" % os.getloadavg()


def flood(ports: list[int], stop: threading.Event, done: list[int]) -> None:
    while not stop.is_set():
        for port in ports:
            if stop.is_set():
                return
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                    sock.sendall(b"x")
                    sock.recv(1)
                done[0] += 1
            except OSError:
                pass


async def main(seconds: float) -> None:
    services = [await asyncio.start_server(echo_service, HOSTS, _free_range(1)[0]) for _ in range(3)]
    service_ports = [s.sockets[0].getsockname()[1] for s in services]
    low, _ = _free_range(762)
    base = low - 3
    text = (f"proxy:\n  gateways: [{{name: big, subnet: 127.0.0.0/24, base: {base}, "
            f"services: [{', '.join(map(str, service_ports))}], hosts: 1-254}}]\n")
    state = StatePaths(Path(tempfile.mkdtemp(prefix="sop-bench-")) / "state").prepare()
    daemon = Daemon(parse_config(text, "bench.yaml"), state, None, echo_log=False)
    await daemon.start()
    rows = []
    try:
        app = SopConsole(state, poll_log=False, watch_terminal=False)
        async with app.run_test(size=(80, 24)) as pilot:
            await pilot.pause(0.5)
            lists = []
            for _ in range(10):
                started = time.perf_counter()
                await app.session.rules_list()
                lists.append((time.perf_counter() - started) * 1000)
            rows.append(("list: proxy.list of 763 rules", f"{statistics.median(lists):.0f} ms", "-"))

            started = time.perf_counter()
            await pilot.press("9")
            while not (isinstance(app.screen, RulesScreen)
                       and "gateway:big" in app.screen.query_one("#rules").rows_wanted):
                await asyncio.sleep(0.005)
            rows.append(("shown: 9 until the plan's line", f"{(time.perf_counter() - started) * 1000:.0f} ms",
                         "< 1000 ms"))
            screen = app.screen
            started = time.perf_counter()
            await pilot.press("enter")
            while screen.query_one("#rules").row_count < 763:
                await asyncio.sleep(0.005)
            rows.append(("opened: enter until 762 port rows", f"{(time.perf_counter() - started) * 1000:.0f} ms",
                         "< 1000 ms"))
            await pilot.press("enter")  # folded again: the flood is about fetching, not drawing 762 rows

            fetches = []
            real = app.session.rules_list

            async def counted():
                fetches.append(time.monotonic())
                return await real()

            app.session.rules_list = counted
            stop, done = threading.Event(), [0]
            worker = threading.Thread(target=flood, args=(list(range(base + 3, base + 765)), stop, done))
            started = time.monotonic()
            worker.start()
            await asyncio.sleep(seconds)
            stop.set()
            await asyncio.to_thread(worker.join)
            ended = time.monotonic()
            rate = sum(started <= t <= ended for t in fetches) / (ended - started)
            rows.append((f"flood: {done[0]} connections in {ended - started:.0f} s, fetches a second",
                         f"{rate:.2f}", "1"))
            total = sum(r.total for r in daemon.engine.rules.list() if r.source == "gateway")
            while screen.query_one("#rules").rows_wanted["gateway:big"][7] != f"0/{total}":
                await asyncio.sleep(0.01)
                if time.monotonic() - ended > 10:
                    break
            rows.append(("flood: its end until the screen shows the daemon's total",
                         f"{time.monotonic() - ended:.2f} s", "< 2 s"))
    finally:
        await daemon.close()
        for server in services:
            server.close()
    print(table([list(r) for r in rows], ["figure", "measured", "target"]))
    print(load())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0, help="how long the flood lasts")
    asyncio.run(main(parser.parse_args().seconds))
