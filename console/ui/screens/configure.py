"""Configure: the appliance's form for the server and both units, checked as `sop-console check` does."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Input, Label, Select, Static

from console.core.choices import HOST_KEY_POLICIES
from console.core.errors import ConsoleError

if TYPE_CHECKING:
    from console.core.config_form import ConfigForm
    from console.ui.session import Session


class ConfigureScreen(Screen):
    """The seed's form; ctrl+s saves through the Session (check, atomic write, .bak, daemon reload)."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", id="configure.save"),
                Binding("escape", "back", "Back", id="configure.back")]

    def __init__(self, session: Session, form: ConfigForm) -> None:
        super().__init__()
        self.session = session
        self.form = form

    def compose(self) -> ComposeResult:
        form = self.form
        yield Static(self.session.save_note(), id="form-title")
        with VerticalScroll(id="form"):
            yield Label("SSH server", classes="form-section")
            yield from _field("SSH Server hostname", "host", form.host)
            yield from _field("SSH Server port", "port", form.port)
            with Horizontal(classes="form-row"):
                yield Label("Host key policy", classes="form-label")
                yield Select([(p, p) for p in HOST_KEY_POLICIES], value=form.host_key_policy,
                             allow_blank=False, compact=True, id="host_key_policy")
            for unit, entry in form.units.items():
                yield Label(f"{unit.capitalize()} unit", classes="form-section")
                yield from _field("username (default root)", f"{unit}-username", entry.username)
                yield from _field("target host", f"{unit}-target", entry.target)
                yield from _field("Forwarded ssh port", f"{unit}-ssh_port", entry.ssh_port)
                yield from _field("Forwarded http port", f"{unit}-http_port", entry.http_port)
                yield from _field("Forwarded app port", f"{unit}-app_port", entry.app_port)
                yield from _field("app port on target", f"{unit}-app_target_port", entry.app_target_port)
        yield Static("", id="form-errors")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#host", Input).focus()

    def _read(self) -> ConfigForm:
        form = self.form
        form.host = self.query_one("#host", Input).value
        form.port = self.query_one("#port", Input).value
        form.host_key_policy = str(self.query_one("#host_key_policy", Select).value)
        for unit, entry in form.units.items():
            for key in ("username", "target", "ssh_port", "http_port", "app_port", "app_target_port"):
                setattr(entry, key, self.query_one(f"#{unit}-{key}", Input).value)
        return form

    @work(exclusive=True, group="configure")
    async def action_save(self) -> None:
        errors = self.query_one("#form-errors", Static)
        why_not = self.session.cannot_save()
        if why_not is not None:
            errors.update(f"✖ not saved: {why_not}")
            return
        try:
            outcome = await self.session.save_configuration(self._read())
        except ConsoleError as exc:
            problems = getattr(exc, "problems", [exc.message])
            errors.update("✖ not saved:\n" + "\n".join(problems))
            return
        self.notify(outcome.text, severity=outcome.severity, timeout=15 if outcome.severity == "warning" else 10)
        self.dismiss()

    def action_back(self) -> None:
        self.dismiss()


def _field(label_text: str, field_id: str, value: str) -> ComposeResult:
    with Horizontal(classes="form-row"):
        yield Label(label_text, classes="form-label")
        yield Input(value=value, id=field_id, compact=True)
