"""The Operations screen (o), driven by keys at 80x24 against a real daemon in-process (a hub; no sshd needed):
the console door records, the list is live, pages of 20 with load more, the date bar, details with copy, export."""

from __future__ import annotations

import json
import stat
from datetime import UTC, datetime

from sshd import free_port
from support import config_of, eventually, me, run
from textual.widgets import Checkbox, DataTable, Input, Static

from console.control.client import ControlClient
from console.core.dates import to_ms
from console.core.oplog import OpQuery
from console.core.status import OpEntry
from console.daemon import Daemon
from console.demo import _free_range
from console.ui.app import SopConsole
from console.ui.dialogs.ask import SecretScreen
from console.ui.dialogs.export import ExportScreen
from console.ui.dialogs.op_details import OpDetailsScreen
from console.ui.screens.clients import ClientsScreen
from console.ui.screens.main import MainScreen
from console.ui.screens.operations import OperationsScreen

SIZE = (80, 24)


def rows(app: SopConsole) -> list[list[str]]:
    grid = app.screen.query_one("#ops", DataTable)
    return [[str(c) for c in grid.get_row_at(i)] for i in range(grid.row_count)]


def columns(app: SopConsole) -> list[str]:
    return [str(c.label) for c in app.screen.query_one("#ops", DataTable).ordered_columns]


def cell(app: SopConsole, row: list[str], column: str) -> str:
    return row[columns(app).index(column)]


async def operations(app: SopConsole, pilot) -> OperationsScreen:
    """o from the main screen: the Operations screen, once its first page is on it."""
    await pilot.press("o")
    await eventually(lambda: isinstance(app.screen, OperationsScreen))
    screen = app.screen
    await eventually(lambda: screen.loaded.is_set())
    return screen


async def hub_daemon(state) -> Daemon:
    low, high = _free_range(6)
    config = config_of(f"hub: {{listen: '127.0.0.1:{free_port()}', ports: '{low}-{high}', default_quota: 2}}\n")
    daemon = Daemon(config, state, None, echo_log=False)
    await daemon.start()
    return daemon


def test_operations_screen_records_the_console_door_is_live_pages_shows_copies_and_exports(state, tmp_path):
    async def body():
        daemon = await hub_daemon(state)
        try:
            for i in range(41):  # older operations, from the command line
                daemon.engine.recorder.record("clients.change", who="alice", via="cli", target=f"c{i:02d}")
            app = SopConsole(state, poll_log=False, watch_terminal=False)
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: isinstance(app.screen, MainScreen))
                # the console's door: add a client from the Clients screen
                await pilot.press("7")
                await eventually(lambda: isinstance(app.screen, ClientsScreen))
                await pilot.press("a", *"acme", "enter")
                await eventually(lambda: isinstance(app.screen, SecretScreen), timeout=5)
                private = str(app.screen.query_one("#secret", Static).render())
                await pilot.press("enter")
                await eventually(lambda: isinstance(app.screen, ClientsScreen))
                await pilot.press("escape")
                await eventually(lambda: isinstance(app.screen, MainScreen))

                screen = await operations(app, pilot)
                shown = rows(app)
                assert len(shown) == 21 and shown[-1][0] == "▼ 20 more: l"  # 20 entries and the load-more row
                assert (cell(app, shown[0], "action"), cell(app, shown[0], "target"), cell(app, shown[0], "from"),
                        cell(app, shown[0], "who"), cell(app, shown[0], "outcome")) == \
                    ("clients.add", "acme", "console", me(), "✔ ok")
                added = daemon.engine.oplog.page(OpQuery(action="clients.add"))["entries"][0]
                assert added.via == "console" and added.details == {"id": "acme"}

                # live: an operation from elsewhere (the CLI's door) shows at the top while the newest are shown
                async with ControlClient(state.control_socket) as cli:
                    await cli.request("clients.change", id="acme", quota=3)
                await eventually(lambda: cell(app, rows(app)[0], "action") == "clients.change"
                                 and cell(app, rows(app)[0], "target") == "acme", timeout=5, what="the live entry")
                assert cell(app, rows(app)[1], "action") == "clients.add"  # pushed down, not replaced
                assert len(rows(app)) == 22

                # load more: l, then enter on the last row; 44 entries in all (41, daemon start, add, change)
                await pilot.press("l")
                await eventually(lambda: len(rows(app)) == 42)
                table = screen.query_one("#ops", DataTable)
                table.move_cursor(row=table.row_count - 1)
                await pilot.press("enter")
                await eventually(lambda: len(rows(app)) == 44 and rows(app)[-1][0] != "▼ 20 more: l")
                targets = [cell(app, r, "target") for r in rows(app)]
                assert len(set(map(tuple, rows(app)))) == 44  # no repeats
                assert [t for t in targets if t.startswith("c")] == [f"c{i:02d}" for i in range(40, -1, -1)]

                # details: enter on an entry; c copies the text shown (OSC 52) and says so
                table.move_cursor(row=0)
                await pilot.press("enter")
                await eventually(lambda: isinstance(app.screen, OpDetailsScreen))
                await pilot.press("c")
                copied = str(app.screen.query_one("#op-copied", Static).render())
                assert app.clipboard == app.screen.text and "action:   clients.change" in app.clipboard
                assert "target:   acme" in app.clipboard and "quota: 3" in app.clipboard
                assert copied.startswith(f"✔ copied these {app.clipboard.count(chr(10)) + 1} lines")
                await pilot.press("escape")
                await eventually(lambda: app.screen is screen)

                # export the 44 shown: JSON, without two columns, to a file
                await pilot.press("e")
                await eventually(lambda: isinstance(app.screen, ExportScreen))
                dialog = app.screen
                dialog.query_one("#col-details", Checkbox).value = False
                dialog.query_one("#col-ssh_from", Checkbox).value = False
                await pilot.click("#fmt-json")
                await eventually(lambda: dialog.format() == "json")
                assert dialog.query_one("#export-file", Input).value == "~/sop-operations.json"
                out = tmp_path / "ops.json"
                dialog.query_one("#export-file", Input).value = str(out)
                await pilot.click("#export")
                await eventually(lambda: out.exists())
                said = str(dialog.query_one("#export-said", Static).render())
                assert said == f"✔ wrote 44 entries (JSON, 9 columns) to {out}"
                assert stat.S_IMODE(out.stat().st_mode) == 0o600
                exported = json.loads(out.read_text())
                assert len(exported) == 44 and set(exported[0]) == set(OpEntry.COLUMNS) - {"details", "ssh_from"}
                assert (exported[0]["action"], exported[0]["target"]) == ("clients.change", "acme")
                export = dialog.query_one("#export")
                await eventually(lambda: not export.has_class("-active"))  # a button takes no click for 0.2 s
                await pilot.click("#export")  # again: the file is there now, and is not overwritten
                await eventually(lambda: "exists: not overwritten" in str(dialog.query_one("#export-said").render()))
                await pilot.press("escape")
                await eventually(lambda: app.screen is screen)
        finally:
            await daemon.close()
        body_line = private.strip().splitlines()[2]
        assert all(body_line.encode() not in p.read_bytes() for p in state.root.glob("oplog.sqlite*"))
    run(body())


def test_the_date_bar_refuses_a_bad_date_in_place_and_a_past_range_is_not_live(state):
    async def body():
        daemon = await hub_daemon(state)
        try:
            base = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
            for minute in range(6):  # 10:00 ... 10:05 UTC
                entry = OpEntry(0, "", "alice", None, "cli", "stop", f"m{minute}", "ok", None, 1.0, {})
                daemon.engine.oplog.insert(entry, to_ms(base) + minute * 60_000)
            app = SopConsole(state, poll_log=False, watch_terminal=False)
            async with app.run_test(size=SIZE) as pilot:
                await eventually(lambda: isinstance(app.screen, MainScreen))
                screen = await operations(app, pilot)
                before = rows(app)
                error = screen.query_one("#ops-date-error", Static)
                await pilot.press("d", *"2026-11-31", "enter")
                await eventually(lambda: error.display)
                assert str(error.render()).startswith("✖ from: not a date: '2026-11-31'")
                assert screen.focused is screen.query_one("#ops-since", Input) and rows(app) == before
                since = screen.query_one("#ops-since", Input)
                since.value = "2026-11-20T10:01Z"
                until = screen.query_one("#ops-until", Input)
                until.value = "2026-11-20T10:01Z"  # not after the start: refused, the cursor on the end date
                until.focus()
                await pilot.press("enter")
                await eventually(lambda: "to: must be after from" in str(error.render()))
                assert screen.focused is until
                until.value = "2026-11-20T10:04Z"
                await pilot.press("enter")
                await eventually(lambda: not error.display and [cell(app, r, "target") for r in rows(app)] ==
                                 ["m3", "m2", "m1"])  # 10:01 inclusive, 10:04 exclusive
                assert screen.focused is screen.query_one("#ops", DataTable)
                # a range that ended: a new operation is not added to it
                daemon.engine.recorder.record("start", who="bob", via="cli", target="master")
                await pilot.pause(0.5)
                assert [cell(app, r, "target") for r in rows(app)] == ["m3", "m2", "m1"]
                # an open end again: the newest are shown, and new ones come live
                until.value = ""
                until.focus()
                await pilot.press("enter")
                await eventually(lambda: cell(app, rows(app)[0], "target") == "master")
                daemon.engine.recorder.record("stop", who="bob", via="cli", target="clone")
                await eventually(lambda: cell(app, rows(app)[0], "target") == "clone")
        finally:
            await daemon.close()
    run(body())
