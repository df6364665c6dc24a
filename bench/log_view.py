"""The log view's index on a large log: time until the tail can be shown, time to index the whole file,
and the memory the index costs. Target: 100 MB of log shows its tail in under a second.

    .venv/bin/python bench/log_view.py [--mb 100]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import tempfile
import time
import tracemalloc
from pathlib import Path

from common import ROOT, table  # noqa: F401  (ROOT puts the project on sys.path)

from console.core.log_index import LogIndex

EVENTS = ["forward ssh listening on the server at 127.0.0.1:10022 -> 127.0.0.1:22",
          "Starting: 2 forwards up on 203.0.113.7:2222 as sop001",
          "server 203.0.113.7:2222 stopped answering keepalives (dead peer detected); retrying in 0.1s",
          "forward http refused: server refused to listen on 127.0.0.1:10080"]


def make_log(path: Path, megabytes: int) -> int:
    target, size, n = megabytes * 1024 * 1024, 0, 0
    units = ("master", "clone", "engine")
    with open(path, "w") as handle:
        while size < target:
            line = f"2026-11-22T{(n // 3600) % 24:02d}:{(n // 60) % 60:02d}:{n % 60:02d}Z {units[n % 3]} " \
                   f"{EVENTS[n % 4]} #{n}\n"
            handle.write(line)
            size += len(line)
            n += 1
    return n


async def ui_tail(state_root: Path) -> tuple[float, float]:
    """In the console (headless, 80x24): seconds from View log to the log's last line on screen, and the
    seconds until the whole file is indexed behind it."""
    from console.core.paths import StatePaths
    from console.ui.app import SopConsole
    from console.ui.backend import StaticBackend
    from console.ui.log_view import LogView

    app = SopConsole(StatePaths(state_root), backend=StaticBackend({"units": []}), poll_log=False,
                     watch_terminal=False)
    async with app.run_test(size=(80, 24)):
        start = time.perf_counter()
        app.run_menu_action("view_log")  # not pilot.press: it waits for the process to idle, which indexing is not
        tail = full = None
        while full is None:
            views = app.screen.query(LogView)
            if views:
                view = views.first()
                at_end = view.row_count and view.bottom_row == view.row_count - 1
                if tail is None and at_end and view.size.height:
                    tail = time.perf_counter() - start
                if view.index.complete and at_end:
                    full = time.perf_counter() - start
            await asyncio.sleep(0.002)
    return tail, full


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tunnel.log"
        lines = make_log(path, args.mb)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        start = time.perf_counter()
        index = LogIndex(path)
        index.open()
        screen = index.lines(index.count - 24, index.count)
        tail_s = time.perf_counter() - start
        assert screen[-1].endswith(f"#{lines - 1}"), screen[-1]
        start = time.perf_counter()
        index.index_all()
        full_s = time.perf_counter() - start
        assert index.count == lines
        start = time.perf_counter()
        hits = index.matching("refused")
        search_s = time.perf_counter() - start
        rare = index.matching(f"#{lines // 2}")
        assert len(rare) == 1
        index.close()
        # Memory apart from timing: tracemalloc slows the indexing it watches.
        tracemalloc.start()
        index = LogIndex(path)
        index.open()
        index.index_all()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        index.close()
        (Path(tmp) / "state").mkdir()
        path.rename(Path(tmp) / "state" / "tunnel.log")
        ui_tail_s, ui_full_s = asyncio.run(ui_tail(Path(tmp) / "state"))
    rows = [
        ["index: open + last 24 lines", f"{tail_s * 1000:.1f} ms", "< 1 s"],
        ["console: View log -> tail on screen (80x24)", f"{ui_tail_s * 1000:.0f} ms", "< 1 s"],
        ["console: ... -> whole file indexed, still at the tail", f"{ui_full_s:.2f} s", "-"],
        ["whole file indexed (in the background)", f"{full_s:.2f} s", "-"],
        ["filter 'refused' over the whole file", f"{search_s:.2f} s ({len(hits)} lines)", "-"],
        ["index memory (tracemalloc peak)", f"{peak / 1e6:.1f} MB = {peak / lines:.1f} B/line", "toolong ~36 B/line"],
        ["process max RSS growth", f"{(rss1 - rss0) / 1024:.1f} MB (the mmap's pages count here)", "-"],
    ]
    print(f"Log index on a {args.mb} MB log of {lines} lines")
    print(table(rows, ["what", "measured", "target / beside"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
