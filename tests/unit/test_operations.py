"""The control operation table (console/control/operations.py) and the CLI's command modules (console/cli/)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from support import run

from console.control import operations
from console.control.operations import OPERATIONS, Call, operation, perform
from console.core.errors import DaemonNotRunning, UsageError

ROOT = Path(__file__).resolve().parents[2]


def _signature(op) -> str:
    return ", ".join(f"{p.name}: {p.kind.__name__}{' | None' if p.nullable else ''}{'' if p.required else ' = ...'}"
                     for p in op.params)


def test_the_table_declares_each_operation_once_with_typed_parameters():
    table = {name: (_signature(op), op.hub, op.read_only) for name, op in OPERATIONS.items() if name != "clients"}
    assert table == {
        "status": ("", False, True),
        "ping": ("", False, True),
        "start": ("unit: str | None = ...", False, False),
        "stop": ("unit: str | None = ...", False, False),
        "restart": ("unit: str | None = ...", False, False),
        "kick": ("unit: str | None = ..., reason: str | None = ..., record: str | None = ..., "
                 "detail: str | None = ...", False, False),
        "trust": ("unit: str, fingerprint: str | None = ..., replace: bool = ..., check: bool = ...", False, False),
        "reload": ("", False, False),
        "clients.add": ("id: str, pub_key: str | None = ..., quota: int | None = ..., force: bool = ...", True, False),
        "clients.list": ("id: str | None = ...", True, True),
        "clients.change": ("id: str, quota: int", True, False),
        "clients.remove": ("id: str", True, False),
        "clients.export": ("", True, True),
        "ops.list": ("since: str | None = ..., until: str | None = ..., action: str | None = ..., "
                     "who: str | None = ..., target: str | None = ..., before: int | None = ..., "
                     "after: int | None = ..., limit: int = ...", False, True),
        "ops.show": ("id: int", False, True),
    }
    assert all(op.doc and "\n" not in op.doc for op in OPERATIONS.values())


def test_what_is_recorded_and_under_which_target():
    """Not read-only: recorded; read-only: not, unless it says so; trust's check records nothing. The target is
    the parameter named unit, id or name, unless the declaration names another."""
    recorded = {name: op.recorded({}) for name, op in OPERATIONS.items()}
    assert {name for name, yes in recorded.items() if not yes} == {
        name for name, op in OPERATIONS.items() if op.read_only}
    assert not OPERATIONS["trust"].recorded({"unit": "master", "check": True})
    assert OPERATIONS["trust"].recorded({"unit": "master"})
    assert (OPERATIONS["start"].target, OPERATIONS["clients.add"].target, OPERATIONS["reload"].target) == \
        ("unit", "id", None)
    try:
        @operation("t.reveal", read_only=True, recorded=True, target="who")
        def reveal(call: Call, who: str, name: str) -> str:
            """A read-only operation that shows a secret."""

        assert OPERATIONS["t.reveal"].recorded({}) and OPERATIONS["t.reveal"].target == "who"
        with pytest.raises(ValueError, match="target 'nobody' is not one of its parameters"):
            @operation("t.bad_target", target="nobody")
            def bad_target(call: Call, name: str) -> None:
                """Bad."""
    finally:
        OPERATIONS.pop("t.reveal", None)


def test_a_declaration_the_table_cannot_check_fails_at_import():
    try:
        with pytest.raises(TypeError, match="t.bad: where: a control parameter is str, int or bool"):
            @operation("t.bad")
            def bad(call: Call, where: dict) -> None:
                """Bad."""
        with pytest.raises(ValueError, match="needs a one-line docstring"):
            @operation("t.undocumented")
            def undocumented(call: Call) -> None:
                pass
        with pytest.raises(ValueError, match="declared twice"):
            @operation("status")
            def again(call: Call) -> None:
                """Again."""
    finally:
        for name in ("t.bad", "t.undocumented"):
            OPERATIONS.pop(name, None)
    assert OPERATIONS["status"].handler is operations.status


def test_without_an_engine_only_the_hub_operations_run():
    async def body():
        with pytest.raises(DaemonNotRunning):
            await perform(Call("me"), "stop", {"unit": "master"})
        with pytest.raises(UsageError, match="^stop: unit must be a string, got 1$"):  # checked before anything
            await perform(Call("me"), "stop", {"unit": 1})
    run(body())


def test_the_engine_and_below_never_import_control_or_the_cli():
    """DESIGN.md layers: control may import engine and hub, never the other way round."""
    below = [ROOT / "console" / part for part in ("core", "tunnel", "hub")]
    files = [f for d in below for f in d.rglob("*.py")] + [ROOT / "console" / "engine.py"]
    offenders = []
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module] if isinstance(node, ast.ImportFrom) and node.module else []
            offenders += [f"{path.relative_to(ROOT)} imports {n}" for n in names
                          if n.startswith(("console.control", "console.cli"))]
    assert len(files) > 10 and offenders == []


@pytest.mark.parametrize("argv, handler", [
    ([], "demo.console"), (["console"], "demo.console"), (["demo"], "demo.demo"),
    (["check"], "units.check"), (["stop", "master"], "units.unit_action"), (["trust", "master"], "units.trust"),
    (["log"], "log.log"), (["key", "show"], "keys.show"), (["key", "install"], "keys.install"),
    (["clients", "remove", "r1"], "clients.remove"), (["clients", "export-authorized-keys"], "clients.export"),
    (["hub", "key"], "clients.hub_key"),
])
def test_each_command_module_declares_its_own_handlers(argv, handler):
    import importlib

    from console.cli import parser

    module, name = handler.split(".")
    assert parser().parse_args(argv).handler is getattr(importlib.import_module(f"console.cli.{module}"), name)


@pytest.mark.parametrize("group, actions", [("key", "show, install"), ("hub", "key"),
                                            ("clients", "add, list, change, remove, export-authorized-keys")])
def test_a_group_without_an_action_is_a_usage_error(group, actions, capsys):
    from console.cli import main

    assert main([group]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: sop-console {group} ")
    assert err.endswith(f"sop-console: {group} needs an action: {actions}\n")
