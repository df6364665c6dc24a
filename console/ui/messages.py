"""The console's own Textual messages.

Screens to the App (they bubble; the App routes them with `@on`):
    MenuChosen      a menu action, from a key, the menu list or the command palette

The App to the screens that show what changed (the App publishes them on a Signal, `SopConsole.status_signal`,
`SopConsole.clients_signal`, `SopConsole.endpoints_signal` and `SopConsole.rules_signal`; a screen subscribes
with `follow(...)` and receives each as a message of its own, so the App never needs to know which screens are
open):
    StatusChanged   the status mirror changed (a unit's or forward's event, or a fresh snapshot)
    ClientChanged   a hub client changed (None: any may have)
    EndpointChanged an endpoint changed: added, removed, its scope, a new check (None: any may have)
    OperationRecorded   an entry was written to the operation log (None: the daemon came back, any may have)
    RuleChanged     a proxy rule changed: added, removed, its state, a destination, its counters (None: any may have)

Within a screen:
    FollowChanged   the log view started or stopped following the file
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from textual.message import Message

if TYPE_CHECKING:
    from textual.dom import DOMNode
    from textual.signal import Signal


@dataclass
class MenuChosen(Message):
    """Run a menu action (console.ui.menu) for the selected unit."""

    action: str


@dataclass
class StatusChanged(Message, bubble=False):
    """Units or forwards changed: redraw from the Session's status."""


@dataclass
class ClientChanged(Message, bubble=False):
    """A hub client changed: fetch it again (None: all of them)."""

    client_id: str | None


@dataclass
class EndpointChanged(Message, bubble=False):
    """An endpoint changed: fetch it again (None: all of them)."""

    name: str | None


@dataclass
class OperationRecorded(Message, bubble=False):
    """An operation was recorded: a screen showing the log's newest entries fetches those after its first."""

    entry_id: int | None


@dataclass
class RuleChanged(Message, bubble=False):
    """A proxy rule changed (`change`: added, removed, state, destination, traffic): fetch the rules again (None:
    any may have, as after a reconnect)."""

    rule_id: str | None
    change: str = ""


@dataclass
class FollowChanged(Message):
    """The log view follows the end of the file, or stopped doing so."""

    following: bool


def follow(signal: Signal, node: DOMNode) -> None:
    """Subscribe `node` to `signal`: each message published reaches it as a message of its own (a fresh copy for
    each subscriber, so none shares a message's handling state with another). Unsubscribed when it goes."""
    deliver: Callable[[Message], object] = lambda message: node.post_message(replace(message))  # noqa: E731
    signal.subscribe(node, deliver, immediate=True)
