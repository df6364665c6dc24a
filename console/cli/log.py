"""`sop-console log`: the tunnel log, read from the state dir (no daemon needed)."""

from __future__ import annotations

import sys

from console.cli.context import Commands, Context
from console.core.errors import EXIT_OK, UsageError


def register(commands: Commands) -> None:
    p = commands.add("log", "the tunnel log (works without the daemon)", log)
    p.add_argument("-n", "--lines", type=int, default=20, metavar="N", help="show the last N lines (default 20)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing new lines (Ctrl-C ends)")


def log(ctx: Context) -> int:
    from console.core.tunnel_log import follow, tail

    path = ctx.paths.tunnel_log
    if ctx.args.lines < 0:
        raise UsageError("-n must be 0 or more")
    if not path.exists() and not ctx.args.follow:
        print(f"no tunnel log yet at {path}", file=sys.stderr)
        return EXIT_OK
    for line in tail(path, ctx.args.lines):
        print(line)
    if ctx.args.follow:
        sys.stdout.flush()
        try:
            for line in follow(path):
                print(line, flush=True)
        except KeyboardInterrupt:
            pass
    return EXIT_OK
