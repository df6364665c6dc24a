"""Console start to first screen, with a running daemon (target: under 0.5 s, and at most 1.25x a one-label app).

Three figures: what an operator sees (a real terminal under tmux, from launching `sop-console` until the menu
and both units showing `● up` are on screen, Python start-up and imports included); beside it, in the same run
and started the same way from the same venv, a one-label Textual app (bench/_one_label.py) until its label is on
screen, and the ratio of the two medians; and the app alone (in-process, headless, from App() to the units on
screen).

    .venv/bin/python bench/console_start.py [--runs 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, table

from console.core.paths import StatePaths


def wait_status(state: Path, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        done = subprocess.run([sys.executable, "-m", "console", "--state-dir", str(state), "status"],
                              capture_output=True, text=True, cwd=ROOT)
        if done.returncode == 0 and done.stdout.count("● up") >= 2:
            return
        time.sleep(0.2)
    raise RuntimeError("demo daemon never came up")


TMUX = ["tmux", "-L", f"sop-bench-{os.getpid()}"]  # our own tmux server, not the operator's


def console_shown(screen: str) -> bool:
    return "Install ssh key" in screen and screen.count("● up") >= 2


def label_shown(screen: str) -> bool:
    return "one label on screen" in screen


def terminal_run(state: Path) -> float:
    return timed_in_tmux(f"-m console --state-dir {state}", console_shown)


def label_run() -> float:
    return timed_in_tmux(str(ROOT / "bench" / "_one_label.py"), label_shown)


def timed_in_tmux(arguments: str, shown) -> float:
    """From launching `python ARGUMENTS` in a fresh 80x24 tmux session until `shown(screen text)`."""
    session = "console"
    command = f"cd {ROOT} && TEXTUAL_ANIMATIONS=none {sys.executable} {arguments}"
    start = time.monotonic()
    subprocess.run([*TMUX, "new-session", "-d", "-s", session, "-x", "80", "-y", "24", command], check=True)
    try:
        while True:
            screen = subprocess.run([*TMUX, "capture-pane", "-t", session, "-p"], capture_output=True,
                                    text=True).stdout
            if shown(screen):
                return time.monotonic() - start
            if time.monotonic() - start > 20:
                raise RuntimeError(f"{arguments}: never shown on screen:\n" + screen)
            time.sleep(0.005)
    finally:
        subprocess.run([*TMUX, "kill-session", "-t", session], capture_output=True)


async def headless_run(state: Path) -> float:
    from textual.widgets import DataTable

    from console.ui.app import SopConsole

    start = time.monotonic()
    app = SopConsole(StatePaths(state), watch_terminal=False)
    async with app.run_test(size=(80, 24)) as pilot:
        while True:
            tables = app.screen.query("#units")
            if tables and tables.first(DataTable).row_count >= 2:
                return time.monotonic() - start
            await pilot.pause(0.005)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="sop-bench-console-"))
    state = tmp / "demo"
    demo = subprocess.Popen([sys.executable, "-m", "console", "--state-dir", str(state), "demo", "--plain"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        wait_status(state)
        rows = []
        if shutil.which("tmux"):
            # A session that outlives the measured ones, so the server does not exit between them.
            subprocess.run([*TMUX, "new-session", "-d", "-s", "keep", "sleep 3600"], check=True)
            terminal_run(state)  # warm the file cache once
            label_run()
            times, label_times = [], []
            for _ in range(args.runs):  # interleaved: a noisy moment costs both, not one
                times.append(terminal_run(state))
                label_times.append(label_run())
            ours, theirs = statistics.median(times), statistics.median(label_times)
            rows.append(["launch to menu and units on screen, real terminal (80x24)", f"{ours:.3f}",
                         f"{min(times):.3f}", f"{max(times):.3f}", "< 0.5 s"])
            rows.append(["one-label Textual app, same venv, same terminal", f"{theirs:.3f}",
                         f"{min(label_times):.3f}", f"{max(label_times):.3f}", "-"])
            rows.append(["ratio of the medians, console / one label", f"{ours / theirs:.2f}x", "", "", "<= 1.25x"])
        times = [asyncio.run(headless_run(state)) for _ in range(args.runs)]
        rows.append(["App() to units on screen, in-process headless", f"{statistics.median(times):.3f}",
                     f"{min(times):.3f}", f"{max(times):.3f}", "-"])
    finally:
        subprocess.run([*TMUX, "kill-server"], capture_output=True)
        demo.terminate()
        demo.wait(5)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"Console start with a running daemon (the demo), {args.runs} runs, seconds")
    print(table(rows, ["what", "median", "min", "max", "target"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
