"""`sop-console check` on hostile YAML: a "billion laughs" alias bomb (10 aliases a level), lists nested deep and
a very long integer. Each case runs as its own process under a deadline; the table shows its exit code, wall
time and peak memory (the child's own ru_maxrss, from wait4), and the first line it printed.

    .venv/bin/python bench/alias_bomb.py [--levels 5 7 9] [--timeout 40]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, table


def alias_bomb(levels: int, width: int = 10) -> str:
    lines = ['l0: &l0 "lol"']
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def deep_lists(depth: int) -> str:
    return "units: " + "[" * depth + "]" * depth + "\n"


def long_integer(digits: int) -> str:
    return f"log:\n  max_bytes: {'9' * digits}\n"


def run_check(config: Path, state: Path, timeout: float) -> tuple[str, float, float, str]:
    """(exit code or 'killed', seconds, peak MiB, first line of stderr/stdout) for one `check`."""
    start = time.monotonic()
    with tempfile.TemporaryFile() as out:
        child = subprocess.Popen([sys.executable, "-m", "console", "check", "--config", str(config),
                                  "--state-dir", str(state)], cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
        killed = False
        while True:
            pid, status, usage = os.wait4(child.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - start > timeout:
                os.kill(child.pid, signal.SIGKILL)
                killed = True
                pid, status, usage = os.wait4(child.pid, 0)
                break
            time.sleep(0.02)
        child.returncode = 0  # reaped by wait4 above; keep Popen from waiting again
        elapsed = time.monotonic() - start
        out.seek(0)
        first = out.read(4096).decode("utf-8", "replace").strip().splitlines()
    code = "killed" if killed else str(os.waitstatus_to_exitcode(status))
    return code, elapsed, usage.ru_maxrss / 1024, (first[0][:90] if first else "")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[5, 7, 9])
    parser.add_argument("--timeout", type=float, default=40.0)
    args = parser.parse_args()
    cases = [(f"alias bomb, {n} levels", alias_bomb(n)) for n in args.levels]
    cases += [("lists nested 5000 deep", deep_lists(5000)), ("5000-digit integer", long_integer(5000)),
              ("plain 2 MiB file", "# " + "x" * (2 << 20) + "\n")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="sop-bomb-") as tmp:
        for name, text in cases:
            path = Path(tmp) / "console.yaml"
            path.write_text(text)
            code, seconds, mib, first = run_check(path, Path(tmp) / "state", args.timeout)
            rows.append([name, f"{len(text.encode()):,}", code, f"{seconds:.2f}", f"{mib:.0f}", first])
    print(table(rows, ["case", "bytes", "exit", "wall s", "peak MiB", "first line of output"]))


if __name__ == "__main__":
    main()
