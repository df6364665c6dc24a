"""The operation log with 1,000,000 entries (a year of them): the figures issue 14 sets.

    .venv/bin/python bench/oplog.py [--rows 1000000] [--records 5000]

- `ops.list` daemon side: the control operation's handler (perform, as the control server runs it, the query in
  a thread), first page, a one-day range in the middle of the year, the page after one, an action filter
  (target: each under 50 ms); and through the control socket from a client, for comparison.
- Recording one operation on the daemon's loop (Recorder.record: the insert, the event, syslog off) while a
  console-like client in another process reads pages through the socket as fast as it can (target: p99 < 1 ms).
- `sop-console ops export -o FILE` of every entry to CSV, the command's wall time (target: < 10 s).
- The console's Operations screen, attached to a daemon (another process), from `o` to its first page on screen
  (target: < 0.3 s).
- The daemon's memory (RSS) with an empty log and with the 1,000,000-entry one, after the same reads (target: not
  growing with the log's size).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, table

from console.core.oplog import _INSERT, OpLog
from console.core.paths import StatePaths

ACTIONS = ["start", "stop", "restart", "trust", "reload", "key install", "clients.add", "clients.change",
           "clients.remove", "endpoints.check"]
TARGETS = ["master", "clone", "acme", "globex", "initech", None]
DAY_MS = 86_400_000


def fill(state: StatePaths, rows: int) -> float:
    """`rows` entries over the last 364 days, in one transaction (what a year of operations leaves)."""
    started = time.monotonic()
    log = OpLog(state.oplog, daemon=True)  # opened now (a command's log opens on its first write)
    now = int(time.time() * 1000)
    span = 364 * DAY_MS
    rng = random.Random(14)
    batch = []
    db = log._db
    db.execute("BEGIN")
    for i in range(rows):
        action = rng.choice(ACTIONS)
        target = rng.choice(TARGETS)
        ok = rng.random() > 0.05
        details = json.dumps({"unit": target, "quota": rng.randint(0, 40)} if target else {"changes": "nothing"})
        batch.append((now - span + i * span // rows, rng.choice(["operator", "alice", "bob"]),
                      rng.choice([None, None, "198.51.100.23"]), rng.choice(["cli", "console", "config-reload"]),
                      action, target, "ok" if ok else "failed", None if ok else "no client 'x'",
                      round(rng.uniform(0.5, 40), 1), details))
        if len(batch) == 50_000:
            db.executemany(_INSERT, batch)
            batch.clear()
    db.executemany(_INSERT, batch)
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    log.close()
    return time.monotonic() - started


def config(tmp: Path) -> Path:
    path = tmp / "console.yaml"
    path.write_text("log: {syslog: false}\n")  # no units, no hub: the daemon, its control socket and its logs
    return path


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f} ms"


# ---------------------------------------------------------------------------------------------- in-process


async def daemon_side(state: StatePaths, records: int, cfg: Path) -> list[list[str]]:
    from console.control.client import ControlClient
    from console.control.operations import Call, perform
    from console.core.config import load_config
    from console.daemon import Daemon

    daemon = Daemon(load_config(cfg), state, cfg, echo_log=False)
    await daemon.start()
    rows = []
    try:
        call = Call("bench", daemon.engine, None, daemon.reload)
        now = time.time()
        middle = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now - 180 * 86400))
        end = time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(now - 179 * 86400))
        first = await perform(call, "ops.list", {"limit": 20})
        cases = {
            "first page (20)": {"limit": 20},
            "a one-day range, 180 days ago": {"since": middle, "until": end, "limit": 20},
            "the page after the first": {"before": first["next_before"], "limit": 20},
            "one action (trust), first page": {"action": "trust", "limit": 20},
            "a page halfway down the log": {"before": first["entries"][0].id // 2, "limit": 20},
        }
        for name, args in cases.items():
            times = []
            for _ in range(30):
                started = time.perf_counter()
                page = await perform(call, "ops.list", dict(args))
                times.append(time.perf_counter() - started)
            assert len(page["entries"]) == 20, (name, page)
            async with ControlClient(state.control_socket) as client:
                socket_times = []
                for _ in range(30):
                    started = time.perf_counter()
                    await client.request("ops.list", **args)
                    socket_times.append(time.perf_counter() - started)
            rows.append([f"ops.list: {name}", f"median {ms(statistics.median(times))}, max {ms(max(times))}",
                         f"through the socket: median {ms(statistics.median(socket_times))}", "< 50 ms"])

        alone, lag_alone = await recording(daemon, records // 2)
        reader = subprocess.Popen([sys.executable, __file__, "--reader", str(state.control_socket)],
                                  stdout=subprocess.PIPE, text=True, cwd=ROOT)
        await asyncio.sleep(1.0)  # the reader is reading
        times, lag = await recording(daemon, records)
        reader.terminate()
        out, _ = await asyncio.to_thread(reader.communicate, timeout=10)  # the daemon's loop answers meanwhile
        pages = int(out.strip() or 0)
        rows.append([f"record one operation ({records:,}, one a ms) while a client reads",
                     f"p50 {ms(pct(times, 50))}, p99 {ms(pct(times, 99))}, max {ms(times[-1])}",
                     f"{pages:,} pages read meanwhile; loop lag p99 {ms(pct(lag, 99))}", "p99 < 1 ms"])
        rows.append([f"the same, no client reading ({records // 2:,})",
                     f"p50 {ms(pct(alone, 50))}, p99 {ms(pct(alone, 99))}, max {ms(alone[-1])}",
                     f"loop lag p99 {ms(pct(lag_alone, 99))}", ""])
    finally:
        await daemon.close()
    return rows


async def recording(daemon, records: int) -> tuple[list[float], list[float]]:
    """Record `records` operations on the daemon's loop, one a millisecond: each call's time, and how late the
    loop woke for the next (sorted)."""
    times, lag = [], []
    for i in range(records):
        started = time.perf_counter()
        daemon.engine.recorder.record("clients.change", who="bench", via="cli", target="acme",
                                      details={"id": "acme", "quota": i % 40}, duration_ms=1.0)
        times.append(time.perf_counter() - started)
        before_sleep = time.perf_counter()
        await asyncio.sleep(0.001)
        lag.append(time.perf_counter() - before_sleep - 0.001)
    return sorted(times), sorted(lag)


def pct(values: list[float], p: int) -> float:
    return values[min(len(values) - 1, len(values) * p // 100)]


async def reader(socket_path: str) -> None:
    """A console reading pages as fast as it can, until terminated: prints how many it read."""
    import signal

    from console.control.client import ControlClient

    pages = 0
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with ControlClient(Path(socket_path)) as client:
        first = await client.request("ops.list", limit=20)
        top = first["entries"][0]["id"]
        rng = random.Random(1)
        while not stop.is_set():
            if pages % 3 == 0:
                await client.request("ops.list", limit=20)
            else:
                await client.request("ops.list", before=rng.randint(21, top), limit=20)
            pages += 1
    print(pages)


# ---------------------------------------------------------------------------------------------- a daemon process


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_daemon(state: StatePaths, cfg: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state.root), "--config", str(cfg),
                             "daemon"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.monotonic() + 30
    while not state.control_socket.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("the daemon did not start")
        time.sleep(0.05)
    return proc


def cli(state: StatePaths, cfg: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "console", "--state-dir", str(state.root), "--config", str(cfg),
                           *args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def workload(state: StatePaths, cfg: Path) -> None:
    """The same reads for both daemons: pages, a date range, an action, one entry shown."""
    for args in (["--limit", "1000"], ["--since", "-200d", "--until", "-199d"], ["--action", "trust"],
                 ["--who", "nobody"], ["--target", "initech", "--limit", "1000"]):
        done = cli(state, cfg, "ops", "list", *args)
        assert done.returncode == 0, done.stderr


async def screen_open(state: StatePaths, runs: int = 5) -> list[float]:
    """The Operations screen, from o until its first page is in the table (the console attached to the daemon)."""
    from textual import events

    from console.ui.app import SopConsole
    from console.ui.screens.main import MainScreen

    times = []
    for _ in range(runs):
        app = SopConsole(state, poll_log=False, watch_terminal=False)
        async with app.run_test(size=(80, 24)) as pilot:
            while not isinstance(app.screen, MainScreen) or app.session.ran is None:
                await pilot.pause(0.01)
            started = time.perf_counter()
            app.post_message(events.Key("o", "o"))  # the key as the terminal's driver posts it (pilot.press waits)
            while type(app.screen).__name__ != "OperationsScreen" or not app.screen.loaded.is_set():
                await asyncio.sleep(0.001)
            times.append(time.perf_counter() - started)
            assert app.screen.query_one("#ops").row_count == 21
    return times


def daemon_process(state: StatePaths, empty: StatePaths, cfg: Path) -> list[list[str]]:
    rows = []
    memory = {}
    for name, where in (("empty log", empty), ("1,000,000 entries", state)):
        proc = start_daemon(where, cfg)
        try:
            time.sleep(1.0)
            at_start = rss_kib(proc.pid)
            workload(where, cfg)
            memory[name] = (at_start, rss_kib(proc.pid))
            if where is state:
                opened = asyncio.run(screen_open(state))
                rows.append(["Operations screen: o to the first page (80x24, daemon in another process)",
                             f"first {ms(opened[0])} (screen imported), then median "
                             f"{ms(statistics.median(opened[1:]))}", "", "< 0.3 s"])
                out = Path(tempfile.mkdtemp()) / "all.csv"
                started = time.monotonic()
                done = cli(state, cfg, "ops", "export", "-o", str(out))
                seconds = time.monotonic() - started
                assert done.returncode == 0, done.stderr
                rows.append(["ops export of every entry to CSV (the command, Python start included)",
                             f"{seconds:.2f} s", f"{done.stderr.strip()}; {out.stat().st_size / 1e6:.0f} MB",
                             "< 10 s"])
                shutil.rmtree(out.parent)
        finally:
            proc.terminate()
            proc.wait(10)
    (e0, e1), (f0, f1) = memory["empty log"], memory["1,000,000 entries"]
    rows.append(["daemon RSS, at start -> after the same reads",
                 f"1,000,000 entries: {f0 / 1024:.1f} -> {f1 / 1024:.1f} MiB",
                 f"empty log: {e0 / 1024:.1f} -> {e1 / 1024:.1f} MiB", "not growing with the log"])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--records", type=int, default=5000)
    parser.add_argument("--reader", metavar="SOCKET", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reader:
        asyncio.run(reader(args.reader))
        return
    tmp = Path(tempfile.mkdtemp(prefix="sop-oplog-bench-"))
    try:
        state = StatePaths(tmp / "state").prepare()
        empty = StatePaths(tmp / "empty").prepare()
        cfg = config(tmp)
        seconds = fill(state, args.rows)
        size = sum(p.stat().st_size for p in state.root.glob("oplog.sqlite*")) / 1e6
        print(f"filled {args.rows:,} entries in {seconds:.1f} s: {size:.0f} MB", file=sys.stderr)
        rows = asyncio.run(daemon_side(state, args.records, cfg))
        rows += daemon_process(state, empty, cfg)
        print(table(rows, ["what", "measured", "beside", "target"]))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
