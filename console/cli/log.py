"""`sop-console log`: the tunnel log, read from the state dir (no daemon needed)."""

from __future__ import annotations

import collections
import sys
from collections.abc import Iterable

from console.cli.context import Commands, Context
from console.core.errors import EXIT_OK, UsageError


def register(commands: Commands) -> None:
    p = commands.add("log", "the tunnel log (works without the daemon)", log)
    p.add_argument("-n", "--lines", type=int, metavar="N",
                   help="show the last N lines (default 20; with --since or --until, every line between)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C ends)")
    p.add_argument("--since", metavar="DATE", help="lines from this time on (inclusive), the rotated files too: "
                                                   "2026-11-20, 2026-11-20T10:00 (local time unless it ends in Z "
                                                   "or +HH:MM), -7d, -24h or -30m")
    p.add_argument("--until", metavar="DATE", help="lines before this time (exclusive), same forms")


def log(ctx: Context) -> int:
    from console.core.tunnel_log import between, tail

    a = ctx.args
    path = ctx.paths.tunnel_log
    if a.lines is not None and a.lines < 0:
        raise UsageError("-n must be 0 or more")
    since, until = _stamp(a.since, "--since"), _stamp(a.until, "--until")
    if not path.exists() and not a.follow:
        print(f"no tunnel log yet at {path}", file=sys.stderr)
        return EXIT_OK
    if since is None and until is None:
        lines: list[str] | Iterable[str] = tail(path, 20 if a.lines is None else a.lines)
    elif a.lines is None:
        lines = between(path, since, until)
    else:
        lines = collections.deque(between(path, since, until), maxlen=a.lines)
    for line in lines:
        print(line)
    if a.follow:
        from console.core.tunnel_log import follow

        sys.stdout.flush()
        try:
            for line in follow(path):
                print(line, flush=True)
        except KeyboardInterrupt:
            pass
    return EXIT_OK


def _stamp(text: str | None, what: str) -> str | None:
    """A date as the tunnel log stamps its lines (UTC, second precision)."""
    if text is None:
        return None
    from console.core.dates import parse_when

    return parse_when(text, what).strftime("%Y-%m-%dT%H:%M:%SZ")
