"""Configure, for a config file the form cannot read (a typo, an unknown key): the file's own text to put right,
checked on ctrl+s with the parser `sop-console check` uses and saved as the form saves (atomic, .bak kept, the
daemon asked to reload). Every problem is listed below the text with its line, as `check` prints it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import Screen
from textual.widgets import Footer, Static, TextArea

from console.core.errors import ConsoleError
from console.ui.dialogs.confirm import ConfirmScreen

if TYPE_CHECKING:
    from console.ui.session import Session


class ConfigTextScreen(Screen):
    """The file's text in an editor with line numbers; ctrl+s checks and saves, esc goes back (asking first when
    there are edits not saved: "Discard your changes?", default No)."""

    BINDINGS = [Binding("ctrl+s", "save", "Save", id="configure.save"),
                Binding("escape", "back", "Back", id="configure.back")]

    def __init__(self, session: Session, text: str, problems: list[str]) -> None:
        super().__init__()
        self.session = session
        self.text = text
        self.problems = problems

    def compose(self) -> ComposeResult:
        path = self.session.config_path
        yield Static(f"Configure: {path}: the form cannot read it, so here is its text\n"
                     f"{self.session.save_effect(as_typed=True)}", id="text-title")
        yield TextArea(self.text, id="config-text", show_line_numbers=True, soft_wrap=False)
        with VerticalScroll(id="text-errors"):  # every problem: tab there and scroll when they are many
            yield Static(_problems("✖ does not check", self.problems), id="form-errors")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#config-text", TextArea).focus()

    @work(exclusive=True, group="configure")
    async def action_save(self) -> None:
        errors = self.query_one("#form-errors", Static)
        try:
            outcome = await self.session.save_config_text(self.query_one("#config-text", TextArea).text)
        except ConsoleError as exc:
            errors.update(_problems("✖ not saved", getattr(exc, "problems", [exc.message])))
            return
        self.notify(outcome.text, severity=outcome.severity, timeout=15 if outcome.severity == "warning" else 10)
        self.dismiss()

    def action_back(self) -> None:
        """Back; with edits not saved, only once the operator says to discard them (default No)."""
        if self.query_one("#config-text", TextArea).text == self.text:
            self.dismiss()
            return
        self.app.push_screen(
            ConfirmScreen("Discard your changes?", "The file stays as it is on disk; what you typed here is lost.",
                          yes="Discard", no="Keep editing"),
            lambda discard: self.dismiss() if discard else None)


def _problems(heading: str, problems: list[str]) -> str:
    return f"{heading} ({len(problems)} problem{'s' if len(problems) != 1 else ''}):\n" + "\n".join(problems)
