"""8 Endpoints with many endpoints, against a real daemon in this process, headless at 80x24 (targets: the list on
screen within 0.5 s of the key; an endpoint added elsewhere on screen within 1 s, as a forward going down is;
idle, the screen costs under 0.05 s of CPU a second).

Three figures per size, the median of --runs: `8` pressed until every row is on screen; an endpoint added through
the control socket (as `sop-console endpoints add` does) until its row is on screen; CPU time of this process over
two idle seconds with the screen open, per second. Beside them, the same figures for 7 Clients with as many hub
clients (the screen it is modelled on).

    .venv/bin/python bench/endpoints_screen.py [--runs 5] [--sizes 10,200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from pathlib import Path

from common import table  # noqa: F401 - puts tests/ and the tree on the path first

os.environ.setdefault("TEXTUAL_ANIMATIONS", "none")

from console.control.client import ControlClient  # noqa: E402
from console.core.config import parse_config  # noqa: E402
from console.core.paths import StatePaths  # noqa: E402
from console.daemon import Daemon  # noqa: E402
from console.ui.app import SopConsole  # noqa: E402

SIZE = (80, 24)


async def until(predicate, timeout: float = 20.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            raise TimeoutError("never on screen")
        await asyncio.sleep(0.002)
    return time.monotonic() - started


def row_count(app, table_id: str) -> int:
    found = app.screen.query(f"#{table_id}")
    return found.first().row_count if found else -1


async def one(kind: str, n: int) -> tuple[float, float, float]:
    from sshd import free_port

    with tempfile.TemporaryDirectory() as tmp:
        state = StatePaths(Path(tmp) / "state").prepare()
        hub = f"hub: {{listen: '127.0.0.1:{free_port()}', ports: '40000-49999', default_quota: 1}}\n"
        daemon = Daemon(parse_config("server: {host: 127.0.0.1, port: 9}\n" + (hub if kind == "clients" else ""),
                                     "bench.yaml"), state, None, echo_log=False)
        await daemon.start()
        try:
            for i in range(n):
                if kind == "endpoints":
                    daemon.engine.endpoints.add(f"ep{i:04d}", f"192.0.2.{i % 250 + 1}", 22, "sop", who="bench")
                else:
                    daemon.engine.clients.add(f"c{i:04d}", None, 1, False)
            key, table_id, shown = ("8", "endpoints", n + 1) if kind == "endpoints" else ("7", "clients", n)
            app = SopConsole(state, poll_log=False, watch_terminal=False)
            async with app.run_test(size=SIZE) as pilot:
                await until(lambda: type(app.screen).__name__ == "MainScreen")
                await pilot.pause(0.2)
                started = time.monotonic()
                await pilot.press(key)
                await until(lambda: row_count(app, table_id) == shown)
                opened = time.monotonic() - started
                async with ControlClient(state.control_socket) as cli:
                    started = time.monotonic()
                    if kind == "endpoints":
                        await cli.request("endpoints.add", name="late", host="192.0.2.250")
                    else:
                        await cli.request("clients.add", id="late")
                    await until(lambda: row_count(app, table_id) == shown + 1)
                    live = time.monotonic() - started
                await pilot.pause(0.3)
                cpu = time.process_time()
                await asyncio.sleep(2.0)
                idle = (time.process_time() - cpu) / 2.0
            return opened, live, idle
        finally:
            await daemon.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sizes", default="10,200")
    args = parser.parse_args()
    rows = []
    for n in (int(s) for s in args.sizes.split(",")):
        for kind in ("endpoints", "clients"):
            results = [asyncio.run(one(kind, n)) for _ in range(args.runs)]
            opened, live, idle = (statistics.median(r[i] for r in results) for i in range(3))
            rows.append([f"{'8 Endpoints' if kind == 'endpoints' else '7 Clients'}, {n}", f"{opened * 1000:.0f} ms",
                         f"{live * 1000:.0f} ms", f"{idle * 1000:.1f} ms/s"])
    print(table(rows, ["screen, rows", "key to every row", "added elsewhere to its row", "idle CPU"]))
    print("targets: < 500 ms; < 1000 ms; < 50 ms/s")


if __name__ == "__main__":
    main()
