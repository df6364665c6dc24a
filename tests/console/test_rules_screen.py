"""9 Rules, driven by keys at 80x24 against a real daemon (in-process, its control socket, real listeners) and a real
sshd for the unit a rule goes via."""

from __future__ import annotations

import asyncio

from support import EchoServer, eventually, roundtrip, run, unit_yaml
from test_console import SIZE, app_for, screen_text, start_daemon, visible_columns

from console.core.rules import make_rule
from console.demo import _free_range
from console.ui.dialogs.add_rule import AddRuleScreen
from console.ui.dialogs.confirm import ConfirmScreen
from console.ui.screens.main import MainScreen
from console.ui.screens.rules import RULE_COLUMNS, RulesScreen
from console.ui.session import Session
from console.ui.widgets.fitted_table import FittedTable

COLUMN = {col.label: i for i, col in enumerate(RULE_COLUMNS)}


def table(app) -> FittedTable:
    return app.screen.query_one("#rules", FittedTable)


def cells(app) -> dict[str, tuple[str, ...]]:
    """Every row the screen lists, key -> every column's cell (those a narrow table leaves out too)."""
    return dict(table(app).rows_wanted) if isinstance(app.screen, RulesScreen) else {}


def cell(app, key: str, column: str) -> str:
    row = cells(app).get(key)
    return row[COLUMN[column]] if row else ""


def highlighted(app) -> str | None:
    grid = table(app)
    return str(grid.ordered_rows[grid.cursor_row].key.value) if grid.row_count else None


def said(app, widget: str) -> str:
    return str(app.screen.query_one(f"#{widget}").render())


async def go_to(pilot, app, key: str) -> None:
    """Move the cursor with j / k, as an operator does, to the row `key`."""
    await eventually(lambda: key in cells(app), what=f"row {key}")
    for _ in range(50):
        if highlighted(app) == key:
            return
        order = list(cells(app))
        await pilot.press("j" if order.index(key) > table(app).cursor_row else "k")
    raise AssertionError(f"the cursor never reached {key}")


def test_rules_screen_adds_removes_filters_and_folds_against_a_real_daemon(sshd, state):
    """Every kind of rule listed with its state (a UDP rule via a unit whose server is a plain sshd `✖ refused` with
    the reason, the gateway plan
    folded, the unit's forward as the ingress rule it is); add refused in place while the text does not parse, then
    a good rule added, listed live, carrying and counting; remove asks (No first), then removes; a config rule is
    refused in place; `/` filters (typed in one burst), esc clears; a plan opens and folds with enter, + and -."""
    async def body():
        async with EchoServer() as echo:
            low, _ = _free_range(8)
            config_port, udp_port, added_port, forward_port, other_port = low, low + 1, low + 2, low + 5, low + 6
            base = low + 2   # the plan: base + n*1 + 0 for hosts 1-2 -> low + 3, low + 4
            text = unit_yaml(sshd, {"master": [f"ssh {forward_port} 127.0.0.1:{echo.port}"]}) + (
                "proxy:\n"
                f"  ingress: [tcp:{config_port}:127.0.0.1:{echo.port},\n"
                f"            {{rule: 'udp:{udp_port}:10.0.5.7:53', via: master}}]\n"
                f"  gateways: [{{name: lab, subnet: 127.0.0.0/24, base: {base}, services: [{echo.port}], "
                "hosts: 1-2}]\n")
            daemon = await start_daemon(sshd, state, text)
            config_rule = make_rule("ingress", f"tcp:{config_port}:127.0.0.1:{echo.port}").id
            udp_rule = make_rule("ingress", f"udp:{udp_port}:10.0.5.7:53", "master").id
            port_1, port_2 = (make_rule("ingress", f"tcp:{base + n}:127.0.0.{n}:{echo.port}").id for n in (1, 2))
            forward = make_rule("ingress", f"tcp:{forward_port}:127.0.0.1:{echo.port}", "master").id
            try:
                app = app_for(state)
                async with app.run_test(size=SIZE) as pilot:
                    await eventually(lambda: isinstance(app.screen, MainScreen))
                    await pilot.press("9")
                    await eventually(lambda: isinstance(app.screen, RulesScreen) and cells(app), what="the rules")
                    await eventually(lambda: cell(app, forward, "state") == "● listening", timeout=10,
                                     what="the unit's forward listening, from the forward's event")
                    assert list(cells(app)) == [config_rule, udp_rule, "gateway:lab", forward]
                    assert (cell(app, config_rule, "state"), cell(app, config_rule, "destination"),
                            cell(app, config_rule, "health")) == ("● listening", f"127.0.0.1:{echo.port}", "● up")
                    no_udp = "UDP rules need a SOP Console hub at the far end"
                    await eventually(lambda: cell(app, udp_rule, "state") == "✖ refused", timeout=10,
                                     what="the UDP rule via a plain sshd refused")
                    assert cell(app, udp_rule, "via") == "master" and no_udp in cell(app, udp_rule, "reason")
                    assert cell(app, "gateway:lab", "listener") == f"▸ 127.0.0.1:{base + 1}-{base + 2}"
                    assert (cell(app, "gateway:lab", "state"), cell(app, "gateway:lab", "destination")) == \
                        ("● listening", "gateway lab")
                    await go_to(pilot, app, udp_rule)
                    assert no_udp in " ".join(said(app, "rule-detail").split())

                    # add: the text checked as it is typed (in the burst after `a`), Enter refused while it is wrong
                    bad = f"tcp:70000:127.0.0.1:{echo.port}"
                    await pilot.press("a", *bad)
                    await eventually(lambda: isinstance(app.screen, AddRuleScreen)
                                     and app.screen.query_one("#rule-text").value == bad, what="the text in the box")
                    problem = Session.rule_problem(bad)
                    assert problem == f"{bad}: port must be 1-65535, got 70000"
                    await eventually(lambda: said(app, "rule-check") == f"✖ {problem}", what="the parser's line")
                    await pilot.press("enter")
                    await pilot.pause(0.2)
                    assert isinstance(app.screen, AddRuleScreen) and said(app, "rule-check") == f"✖ {problem}"
                    assert daemon.engine.rules.runtime_rules == []
                    good = f"tcp:{added_port}:127.0.0.1:{echo.port}"
                    await pilot.press(*["backspace"] * len(bad), *good)
                    await eventually(lambda: said(app, "rule-check").startswith(f"● listens on port {added_port}"))
                    await pilot.press("enter")
                    added = make_rule("ingress", good).id
                    await eventually(lambda: isinstance(app.screen, RulesScreen)
                                     and cell(app, added, "state") == "● listening", what="the added rule listed")
                    assert [r.text for r in daemon.engine.rules.runtime_rules] == [good]
                    await eventually(lambda: highlighted(app) == added, what="the cursor on the new rule")
                    assert "added at run time by" in said(app, "rule-detail")
                    # live: it carries a connection, and its counters move on screen from the daemon's events
                    assert await roundtrip(added_port, b"x" * 1000) == b"x" * 1000
                    await eventually(lambda: (cell(app, added, "conns"), cell(app, added, "in")) == ("0/1", "1.0 kB"),
                                     timeout=5, what="the connection counted on screen")
                    # a rule another client adds (the CLI, another console) shows up by itself
                    other = await daemon.engine.rules.add("egress", f"udp:{other_port}:127.0.0.1:{echo.port}", None)
                    await eventually(lambda: cell(app, other.id, "state") == "● listening", what="listed live")
                    await daemon.engine.rules.remove("egress", f"udp:{other_port}:127.0.0.1:{echo.port}", None)
                    await eventually(lambda: other.id not in cells(app), what="its removal, live")

                    # remove: asks first, No is the default
                    await go_to(pilot, app, added)
                    await pilot.press("d")
                    await eventually(lambda: isinstance(app.screen, ConfirmScreen))
                    await pilot.press("enter")
                    await eventually(lambda: isinstance(app.screen, RulesScreen))
                    await pilot.pause(0.3)
                    assert added in cells(app) and len(daemon.engine.rules.runtime_rules) == 1
                    await pilot.press("d", "y")
                    await eventually(lambda: added not in cells(app), what="the rule removed from the list")
                    assert daemon.engine.rules.runtime_rules == []
                    assert await _refused(added_port), "its listener still accepts"

                    # a rule of the config: refused in place, nothing asked
                    await go_to(pilot, app, config_rule)
                    await pilot.press("d")
                    await eventually(lambda: "cannot be removed at run time" in said(app, "rules-message"))
                    assert isinstance(app.screen, RulesScreen) and config_rule in cells(app)
                    assert "is in the config at proxy.ingress[0]" in " ".join(said(app, "rules-message").split())
                    await pilot.press("j")  # the line is about that rule: it goes with the cursor
                    await eventually(lambda: not app.screen.query_one("#rules-message").display)

                    # filter: `/` and the text in one burst; esc clears
                    await pilot.press("slash", *"lab")
                    await eventually(lambda: list(cells(app)) == ["gateway:lab"], what="only the plan")
                    assert "filter 'lab'" in said(app, "rules-title")
                    await pilot.press("escape")
                    await eventually(lambda: list(cells(app)) == [config_rule, udp_rule, "gateway:lab", forward])
                    assert isinstance(app.screen, RulesScreen)  # esc cleared the filter; it did not leave
                    await pilot.press("slash", *str(base + 2))   # a port of the plan: shown under it, alone
                    await eventually(lambda: list(cells(app)) == ["gateway:lab", port_2],
                                     what="the port under its plan")
                    assert cell(app, "gateway:lab", "listener").startswith("▾")
                    await pilot.press("escape")
                    await eventually(lambda: len(cells(app)) == 4)

                    # the plan opens (enter) and folds (-), opens again (+), and folds from one of its ports
                    await go_to(pilot, app, "gateway:lab")
                    await pilot.press("enter")
                    await eventually(lambda: list(cells(app)) ==
                                     [config_rule, udp_rule, "gateway:lab", port_1, port_2, forward])
                    assert cell(app, port_1, "listener") == f"  127.0.0.1:{base + 1}"
                    assert cell(app, port_2, "destination") == f"127.0.0.2:{echo.port}"
                    assert "enter or - hides its ports" in said(app, "rule-detail")
                    await pilot.press("minus")
                    await eventually(lambda: port_1 not in cells(app))
                    await pilot.press("plus")
                    await eventually(lambda: port_1 in cells(app))
                    await pilot.press("j", "j")
                    assert highlighted(app) == port_2
                    await pilot.press("minus")
                    await eventually(lambda: port_2 not in cells(app) and highlighted(app) == "gateway:lab")
                    await pilot.press("escape")
                    await eventually(lambda: isinstance(app.screen, MainScreen))
            finally:
                await daemon.close()
    run(body())


async def _refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


def test_rules_at_60x20_drop_columns_whole_and_say_the_rest_under_the_table(tmp_path):
    """At 60x20 the table keeps the listener, its state and the destination whole (the least important columns
    dropped, none cut at the edge), every rule in view; the lines under it say the highlighted rule in full (its
    direction, each destination's state and reason, where it comes from, its counters). At 200x50 every column."""
    from test_snapshots import _app

    async def body(size):
        app = _app(tmp_path / f"{size[0]}", "sop")
        async with app.run_test(size=size) as pilot:
            await eventually(lambda: isinstance(app.screen, MainScreen))
            await pilot.press("9")
            await eventually(lambda: isinstance(app.screen, RulesScreen) and cells(app))
            await pilot.pause(0.1)
            grid = table(app)
            assert visible_columns(grid) == [str(c.label) for c in grid.ordered_columns]
            assert grid.virtual_size.width <= grid.scrollable_content_region.width, size
            assert grid.scrollable_content_region.height - grid.header_height >= grid.row_count == 7
            text = " ".join(screen_text(app).split())
            if size[0] < 70:
                assert visible_columns(grid) == ["listener", "state", "destination"]
                for part in ("ingress tcp:443:10.10.100.152:8443 via local: ● listening on 127.0.0.1:443",
                             "-> 10.10.100.153:8443 ✖ down: connection refused (2026-11-22T10:03:12Z)",
                             "in the config at proxy.ingress[0]; open 2, total 41"):
                    assert part in text, (part, text)
            else:
                assert visible_columns(grid) == [c.label for c in RULE_COLUMNS]

    for size in ((60, 20), (200, 50)):
        run(body(size))


def test_rules_screen_follows_a_restarted_daemon_and_its_kept_rules(state):
    """The daemon stops: the bar says so, the rules stay listed as last known, and a remove answers at once that
    the daemon is gone; a new daemon on the same state dir: the rule added at run time is back (kept in the store),
    listed live again with no key pressed, and the message goes."""
    async def body():
        async with EchoServer() as echo:
            port = _free_range(1)[0]
            text = "proxy:\n  listen: 127.0.0.1\n"
            running = [await start_daemon(None, state, text, authorize=False)]
            kept = await running[0].engine.rules.add("ingress", f"tcp:{port}:127.0.0.1:{echo.port}", None, "alice")
            try:
                app = app_for(state)
                async with app.run_test(size=SIZE) as pilot:
                    await eventually(lambda: isinstance(app.screen, MainScreen))
                    await pilot.press("9")
                    await eventually(lambda: cell(app, kept.id, "state") == "● listening")
                    bar = app.screen.query_one("#daemon-bar")
                    assert not bar.display

                    await running.pop().close()
                    await eventually(lambda: bar.display and "reconnecting" in str(bar.render()), timeout=2)
                    assert cell(app, kept.id, "state") == "● listening"  # the last state known
                    await pilot.press("d", "y")
                    await eventually(lambda: "the daemon is gone" in said(app, "rules-message"), timeout=3)

                    running.append(await start_daemon(None, state, text, authorize=False))
                    await eventually(lambda: not bar.display, timeout=2, what="live again")
                    await eventually(lambda: cell(app, kept.id, "state") == "● listening"
                                     and not app.screen.query_one("#rules-message").display, timeout=5)
                    assert "alice" in said(app, "rule-detail")
                    assert await roundtrip(port, b"back") == b"back"
            finally:
                for daemon in running:
                    await daemon.close()
    run(body())
