"""`sop-console ops list|show|export`: the operation log (console/core/oplog.py).

`list` and `show` ask the daemon when it runs (`ops.list`, `ops.show`); without one they read the log's file
(read-only: the daemon may start and write meanwhile, WAL lets both be). `export` reads the file directly in
every case: a million rows as JSON through the control socket would keep the daemon's loop busy encoding them.
Dates: 2026-11-20, 2026-11-20T10:00 (local time unless it carries a zone), -7d, -24h, -30m; --since inclusive,
--until exclusive (console/core/dates.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from console.cli.context import Commands, Context
from console.core.errors import EXIT_OK, DaemonNotRunning, UsageError

DATE_HELP = "2026-11-20, 2026-11-20T10:00 (local time unless it ends in Z or +HH:MM), -7d, -24h or -30m"


def register(commands: Commands) -> None:
    ops = commands.group("ops", "the operation log: who did what, from where, how it went (list, show, export)")
    p = ops.add("list", "entries newest first, a page at a time (the next page's --before is printed at the end)",
                list_)
    _filters(p)
    p.add_argument("--limit", type=int, default=20, metavar="N", help="entries on a page (1-1000, default 20)")
    p.add_argument("--before", type=int, metavar="ID", help="the page after entry ID (as the last page printed)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = ops.add("show", "one entry, every field", show)
    p.add_argument("id", type=int, metavar="ID")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p = ops.add("export", "every entry the filters select, as CSV or JSON (to stdout, or -o FILE)", export)
    _filters(p)
    p.add_argument("--format", choices=("csv", "json"), default="csv", help="csv (default) or json")
    p.add_argument("--columns", metavar="A,B,...",
                   help="which columns, in order (default all: id,at,who,ssh_from,via,action,target,outcome,"
                        "reason,duration_ms,details)")
    p.add_argument("-o", "--output", metavar="FILE", help="write FILE (0600, atomically) instead of stdout")


def _filters(p) -> None:
    p.add_argument("--since", metavar="DATE", help=f"from this time on (inclusive): {DATE_HELP}")
    p.add_argument("--until", metavar="DATE", help="before this time (exclusive), same forms")
    p.add_argument("--action", metavar="A", help="this operation only (clients.add), or a prefix: 'clients.*'")
    p.add_argument("--who", metavar="U", help="done by this user, or from this SSH client address")
    p.add_argument("--target", metavar="T", help="on this unit, client or endpoint")


# ---------------------------------------------------------------------------------------------- the commands


def list_(ctx: Context) -> int:
    a = ctx.args
    if not 1 <= a.limit <= 1000:
        raise UsageError(f"--limit must be 1-1000, got {a.limit}")
    page = _page(ctx, **_filter_args(a), before=a.before, limit=a.limit)
    if a.json:
        print(json.dumps(page, indent=2, ensure_ascii=False))
        return EXIT_OK
    from console.core.dates import local_text, local_zone
    from console.core.status import OpEntry

    entries = [OpEntry.from_json(e) for e in page["entries"]]
    if not entries:
        print("no operations recorded" + (" that match" if _filter_args(a) or a.before else ""))
        return EXIT_OK
    print(f"{'id':>7}  {'time (' + local_zone() + ')':<25} {'who':<14} {'from':<13} {'action':<16} "
          f"{'target':<12} outcome")
    for e in entries:
        print(f"{e.id:>7}  {local_text(e.at):<25} {e.who + ('@' + e.ssh_from if e.ssh_from else ''):<14} "
              f"{e.via:<13} {e.action:<16} {e.target or '-':<12} {e.outcome}"
              + (f": {e.reason}" if e.reason else ""))
    if page["next_before"] is not None:
        print(f"next page: --before {page['next_before']}")
    return EXIT_OK


def show(ctx: Context) -> int:
    from console.core.dates import local_text
    from console.core.status import OpEntry

    try:
        data = ctx.request("ops.show", id=ctx.args.id)
    except DaemonNotRunning:
        entry = _file(ctx).get(ctx.args.id)
        if entry is None:
            raise UsageError(f"no operation {ctx.args.id} in the log (retention may have dropped it)") from None
        data = entry.to_json()
    if ctx.args.json:
        print(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        entry = OpEntry.from_json(data)
        print(entry.text(local_text(entry.at)))
    return EXIT_OK


def export(ctx: Context) -> int:
    from console.core.oplog import OpQuery, export_columns, write_export
    from console.core.paths import atomic_file

    a = ctx.args
    columns = export_columns(a.columns)
    rows = _file(ctx).rows(OpQuery(**_filter_args(a, as_ms=True)), columns, a.format)
    if a.output is None:
        write_export(rows, columns, a.format, sys.stdout)
        return EXIT_OK
    path = Path(a.output).expanduser()
    with atomic_file(path, 0o600) as out:
        count = write_export(rows, columns, a.format, out)
    print(f"wrote {count:,} {'entry' if count == 1 else 'entries'} to {path.absolute()}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------- daemon or file


def _filter_args(a, *, as_ms: bool = False) -> dict[str, Any]:
    """The filters: dates resolved here, in the operator's time zone, to UTC text as a request carries them (or
    to milliseconds, as the file is asked)."""
    from console.core.dates import parse_when, to_ms, utc_text

    args: dict[str, Any] = {}
    for name in ("since", "until"):
        if getattr(a, name) is not None:
            when = parse_when(getattr(a, name), f"--{name}")
            args[name] = to_ms(when) if as_ms else utc_text(when)
    for name in ("action", "who", "target"):
        if getattr(a, name):
            args[name] = getattr(a, name)
    return args


def _file(ctx: Context):
    from console.core.oplog import OpLog

    return OpLog(ctx.paths.oplog, read_only=True)


def _page(ctx: Context, **args: Any) -> dict[str, Any]:
    """A page from the daemon; with none running, from the file (the same answer, in the same JSON form)."""
    try:
        return ctx.request("ops.list", **args)
    except DaemonNotRunning:
        pass
    from console.core.oplog import OpQuery
    from console.core.status import json_default

    query = OpQuery(**_filter_args(ctx.args, as_ms=True), before=args.get("before"), limit=args["limit"])
    return json.loads(json.dumps(_file(ctx).page(query), default=json_default))
