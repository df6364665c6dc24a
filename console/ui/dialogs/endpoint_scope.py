"""An endpoint's scope: associate VPCs and subnets (typed, several at once), unassociate the entries marked with
space (several at once). What the daemon refuses is said in the dialog, which stays; what was done closes it
with one line for the screen."""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Input, Label, Static
from textual.widgets.selection_list import Selection

from console.core.endpoints import SCOPE_ANSWERS, SCOPE_SOURCES
from console.core.errors import ConsoleError
from console.ui.widgets.marks import MarkList

if TYPE_CHECKING:
    from console.core.status import EndpointStatus
    from console.ui.session import Session

def split_scope(text: str) -> tuple[list[str], list[str]]:
    """What was typed, as (VPC names, subnets): a word that reads as a network is a subnet, any other a VPC."""
    vpcs, subnets = [], []
    for word in re.split(r"[\s,]+", text.strip()):
        if not word:
            continue
        try:
            ipaddress.ip_network(word, strict=False)
        except ValueError:
            vpcs.append(word)
        else:
            subnets.append(word)  # as typed: the daemon says what is wrong with it (host bits set ...)
    return vpcs, subnets


def answer_text(verb: str, name: str, answer: dict) -> str:
    """The daemon's answer to associate / unassociate in one line or a few."""
    parts = [f"{words} {', '.join(answer[key])}" for key, words in SCOPE_ANSWERS[verb] if answer.get(key)]
    lines = [f"● {name}: {'; '.join(parts)}" if parts else f"{name}: nothing changed"]
    lines += [f"note: {note}" for note in answer.get("notes", [])]
    return "\n".join(lines)


class _ScopeDialog(ModalScreen[str | None]):
    """Carries out one scope request; a refusal is said under the entries and the dialog stays."""

    def __init__(self, session: Session, name: str) -> None:
        super().__init__()
        self.session = session
        self.endpoint_name = name

    def refuse(self, text: str) -> None:
        self.query_one("#scope-error", Static).update(Content(f"✖ {text}"))

    @work(exclusive=True, group="scope")
    async def send(self, verb: str, vpcs: list[str], subnets: list[str]) -> None:
        try:
            answer = await self.session.endpoint_scope(verb, self.endpoint_name, vpcs, subnets)
        except ConsoleError as exc:
            self.refuse(exc.message)
            return
        self.dismiss(answer_text(verb, self.endpoint_name, answer))

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)


class AssociateScreen(_ScopeDialog):
    """Associate: VPC names and subnets typed in one line (spaces or commas between them)."""

    BINDINGS = [Binding("escape", "cancel", "Cancel", id="associate.cancel")]

    def __init__(self, session: Session, name: str, vpcs: list[str]) -> None:
        super().__init__(session, name)
        self.vpcs = vpcs

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Associate with {self.endpoint_name}: VPCs and subnets", classes="dialog-title")
            known = f"VPCs in the config: {', '.join(self.vpcs)}" if self.vpcs else "The config names no VPCs."
            yield Static(Content(f"Several at once, spaces between them. {known}"), classes="dialog-text")
            yield Input(placeholder="e.g. 10.4.0.0/24 prod", id="scope-input")
            yield Static("", id="scope-error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Associate", id="associate", variant="primary")

    def on_mount(self) -> None:
        self.query_one("#scope-input", Input).focus()

    @on(Input.Submitted, "#scope-input")
    @on(Button.Pressed, "#associate")
    def _associate(self) -> None:
        vpcs, subnets = split_scope(self.query_one("#scope-input", Input).value)
        if not vpcs and not subnets:
            self.refuse("type a VPC's name or a subnet such as 10.4.0.0/24")
            return
        self.send("associate", vpcs, subnets)


class UnassociateScreen(_ScopeDialog):
    """Unassociate: the endpoint's scope entries, several marked with space, taken out at once. Entries the
    config sets are listed too, saying so: the daemon refuses them (the file is where they change)."""

    BINDINGS = [Binding("u", "unassociate", "Unassociate marked", id="unassociate.go"),
                Binding("escape", "cancel", "Cancel", id="unassociate.cancel")]

    def __init__(self, session: Session, endpoint: EndpointStatus) -> None:
        super().__init__(session, endpoint.name)
        self.endpoint = endpoint

    def compose(self) -> ComposeResult:
        entries = [Selection(f"{'VPC' if s.kind == 'vpc' else 'subnet'} {s.network} "
                             f"({SCOPE_SOURCES.get(s.source, s.source)})", (s.kind, s.network))
                   for s in self.endpoint.scope]
        with Vertical(classes="dialog wide"):
            yield Label(f"Unassociate from {self.endpoint_name}", classes="dialog-title")
            yield Static("Space marks an entry; u unassociates those marked. What the config sets changes only in "
                         "the file.", classes="dialog-text")
            yield MarkList(*entries, id="scope-entries", compact=True)
            yield Static("", id="scope-error")
            with Horizontal(classes="buttons"):
                yield Button("Cancel", id="cancel")
                yield Button("Unassociate", id="unassociate", variant="error")

    def on_mount(self) -> None:
        self.query_one("#scope-entries", MarkList).focus()

    @on(Button.Pressed, "#unassociate")
    def action_unassociate(self) -> None:
        marked = self.query_one("#scope-entries", MarkList).selected
        if not marked:
            self.refuse("nothing marked: space marks an entry")
            return
        self.send("unassociate", [n for kind, n in marked if kind == "vpc"],
                  [n for kind, n in marked if kind == "subnet"])
