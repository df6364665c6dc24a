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
                 "detail: str | None = ..., failed: str | None = ...", False, False),
        "trust": ("unit: str, fingerprint: str | None = ..., replace: bool = ..., check: bool = ...", False, False),
        "reload": ("", False, False),
        "clients.add": ("id: str, pub_key: str | None = ..., quota: int | None = ..., force: bool = ...", True, False),
        "clients.list": ("id: str | None = ...", True, True),
        "clients.change": ("id: str, quota: int", True, False),
        "clients.remove": ("id: str", True, False),
        "clients.export": ("", True, True),
        "endpoints.list": ("", False, True),
        "endpoints.show": ("name: str", False, True),
        "endpoints.add": ("name: str, host: str, port: int = ..., username: str | None = ..., comment: str | None = ..., "
                          "subnet: str | None = ...", False, False),
        "endpoints.remove": ("names: list", False, False),
        "endpoints.associate": ("name: str, vpcs: list | None = ..., subnets: list | None = ...", False, False),
        "endpoints.unassociate": ("name: str, vpcs: list | None = ..., subnets: list | None = ...", False, False),
        "endpoints.route": ("address: str", False, True),
        "endpoints.check": ("names: list", False, False),
        "endpoints.setup_auth": ("name: str, method: str, password: str | None = ..., identity: str | None = ..., "
                                 "login_user: str | None = ..., unit: str | None = ..., "
                                 "trust_fingerprint: str | None = ...", False, False),
        "endpoints.setup_script": ("name: str, unit: str | None = ...", False, False),
        "endpoints.check_sshd": ("name: str, fix: bool = ..., identity: str | None = ..., "
                                 "login_user: str | None = ...", False, False),
        "proxy.list": ("", False, True),
        "proxy.add": ("direction: str, rule: str, via: str | None = ...", False, False),
        "proxy.remove": ("direction: str, rule: str, via: str | None = ...", False, False),
        "gateway.show": ("name: str", False, True),
        "gateway.export": ("name: str, source: str, interface: str = ...", False, True),
        "ops.list": ("since: str | None = ..., until: str | None = ..., action: str | None = ..., "
                     "who: str | None = ..., target: str | None = ..., before: int | None = ..., "
                     "after: int | None = ..., limit: int = ...", False, True),
        "ops.show": ("id: int", False, True),
    }
    assert {name for name, op in OPERATIONS.items() if op.endpoints} == {n for n in table if n.startswith("endpoints.")}
    assert {name for name, op in OPERATIONS.items() if op.rules} == {n for n in table if n.startswith(("proxy.",
                                                                                                       "gateway."))}
    assert all(op.doc and "\n" not in op.doc for op in OPERATIONS.values())


def test_what_is_recorded_and_under_which_target():
    """Not read-only: recorded; read-only: not, unless it says so; trust's check records nothing. The target is
    the parameter named name, id or unit (in that order), unless the declaration names another."""
    recorded = {name: op.recorded({}) for name, op in OPERATIONS.items()}
    assert {name for name, yes in recorded.items() if not yes} == {
        name for name, op in OPERATIONS.items() if op.read_only}
    assert not OPERATIONS["trust"].recorded({"unit": "master", "check": True})
    assert OPERATIONS["trust"].recorded({"unit": "master"})
    assert (OPERATIONS["start"].target, OPERATIONS["clients.add"].target, OPERATIONS["reload"].target,
            OPERATIONS["endpoints.setup_auth"].target, OPERATIONS["proxy.add"].target) == \
        ("unit", "id", None, "name", "rule")
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
        with pytest.raises(TypeError, match=r"t.bad: where: a control parameter is str, int, bool or list\[str\]"):
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
        with pytest.raises(DaemonNotRunning):  # the endpoints' operations need the daemon's table, or the store's
            await perform(Call("me"), "endpoints.list", {})
        with pytest.raises(UsageError, match=r"^endpoints.remove: names must be a list of strings, got 'web'$"):
            await perform(Call("me"), "endpoints.remove", {"names": "web"})
        with pytest.raises(UsageError, match=r"^endpoints.remove: names must be a list of strings, got a list$"):
            await perform(Call("me"), "endpoints.remove", {"names": ["web", 1]})
        with pytest.raises(UsageError, match=r"^endpoints.remove: names holds at most 1000 items, got 1001$"):
            await perform(Call("me"), "endpoints.remove", {"names": ["web"] * 1001})
        with pytest.raises(DaemonNotRunning):  # the proxy rules' operations need the daemon's table, or the store's
            await perform(Call("me"), "proxy.list", {})
        with pytest.raises(UsageError, match=r"^proxy.add: rule is required$"):
            await perform(Call("me"), "proxy.add", {"direction": "ingress"})
    run(body())


def test_the_engine_and_below_never_import_control_or_the_cli():
    """DESIGN.md layers: control may import engine and hub, never the other way round."""
    below = [ROOT / "console" / part for part in ("core", "tunnel", "hub", "proxy")]
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
    (["hub", "key"], "clients.hub_key"), (["endpoints", "list"], "endpoints.list_"),
    (["endpoints", "remove", "a", "b"], "endpoints.remove"), (["endpoints", "route", "10.0.0.1"], "endpoints.route"),
    (["proxy", "list"], "proxy.list_"), (["proxy", "add", "--ingress", "tcp:1:a:1"], "proxy.add"),
    (["proxy", "remove", "--egress", "tcp:1:a:1"], "proxy.remove"), (["gateway", "show", "g"], "proxy.show"),
    (["gateway", "export", "g", "--iptables", "--source", "10.0.0.1"], "proxy.export"),
])
def test_each_command_module_declares_its_own_handlers(argv, handler):
    import importlib

    from console.cli import parser

    module, name = handler.split(".")
    assert parser().parse_args(argv).handler is getattr(importlib.import_module(f"console.cli.{module}"), name)


@pytest.mark.parametrize("group, actions", [("key", "show, install"), ("hub", "key"),
                                            ("clients", "add, list, change, remove, export-authorized-keys"),
                                            ("endpoints", "list, show, add, remove, associate, unassociate, route, "
                                                          "check, setup-auth, check-sshd"),
                                            ("proxy", "add, remove, list"), ("gateway", "show, export")])
def test_a_group_without_an_action_is_a_usage_error(group, actions, capsys):
    from console.cli import main

    assert main([group]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: sop-console {group} ")
    assert err.endswith(f"sop-console: {group} needs an action: {actions}\n")


@pytest.mark.parametrize("group, actions", [
    ("endpoints", ["list", "show", "add", "remove", "associate", "unassociate", "route", "check", "setup-auth",
                   "check-sshd"]),
    ("proxy", ["add", "remove", "list"]), ("gateway", ["show", "export"])])
def test_every_command_of_a_group_and_its_options_say_what_they_are(group, actions):
    import argparse

    from console.cli import parser

    top = parser()
    found = next(a for a in top._actions if isinstance(a, argparse._SubParsersAction)).choices[group]
    assert found.description, group
    commands = next(a for a in found._actions if isinstance(a, argparse._SubParsersAction))
    assert list(commands.choices) == actions
    for name, command in commands.choices.items():
        assert command.description, name
        for action in command._actions:
            assert action.help, f"{group} {name} {action.dest}"
