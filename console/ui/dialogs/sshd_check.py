"""The sshd check of an endpoint: one line per setting (ok / needs change, why, the line to write), and Fix (asks
first, default No), which writes the lines, validates, reloads sshd and shows each setting before and after."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, VerticalScroll
from textual.content import Content
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from console.core.errors import ConsoleError
from console.core.sshd_settings import render
from console.ui.dialogs.confirm import ConfirmScreen

if TYPE_CHECKING:
    from console.core.status import SshdCheck
    from console.ui.session import Session

WIDTH = 70  # the dialog's text columns (a wide dialog, 76, less its border and padding)


class SshdCheckScreen(ModalScreen[None]):
    """Reads the endpoint's sshd settings when shown (nothing is changed); Fix, once confirmed, changes them."""

    BINDINGS = [
        Binding("f", "fix", "Fix", tooltip="write the lines that need a change, validate, reload sshd (asks first)",
                id="sshd.fix"),
        Binding("r", "recheck", "Check again", id="sshd.recheck"),
        Binding("escape", "close", "Close", id="sshd.close"),
    ]

    def __init__(self, session: Session, name: str) -> None:
        super().__init__()
        self.session = session
        self.name_ = name
        self.check: SshdCheck | None = None

    def compose(self) -> ComposeResult:
        # the lines scroll (arrows, page keys) when they do not fit; the buttons stay (docked at the bottom)
        with VerticalScroll(classes="dialog wide tall", id="sshd-dialog"):
            yield Label(f"sshd check: {self.name_}", classes="dialog-title")
            yield Static("", id="sshd-text")
            with Horizontal(classes="buttons docked"):
                yield Button("Close", id="close")
                yield Button("Fix", id="fix", variant="error", disabled=True)

    def on_mount(self) -> None:
        self.query_one("#sshd-dialog").focus()  # the arrows scroll a long check
        self.action_recheck()

    def show(self, text: str) -> None:
        self.query_one("#sshd-text", Static).update(Content(text))  # plain text: the server's words are no markup

    def action_recheck(self) -> None:
        self._run(False)

    @work(exclusive=True, group="sshd")
    async def _run(self, fix: bool) -> None:
        button = self.query_one("#fix", Button)
        button.disabled = True
        self.show(f"◌ {'fixing' if fix else 'reading'} the sshd settings of {self.name_} …")
        try:
            self.check = await self.session.endpoint_check_sshd(self.name_, fix=fix)
        except ConsoleError as exc:
            self.show(f"✖ {exc.message}")
            return
        self.show(render(self.check, WIDTH, fix_word="Fix (f)"))
        button.disabled = not self.fixable()

    def fixable(self) -> bool:
        return self.check is not None and bool(self.check.needs_change) and self.check.privilege != "none"

    @on(Button.Pressed, "#fix")
    @work(exclusive=True, group="sshd-fix")
    async def action_fix(self) -> None:
        check = self.check
        if not self.fixable() or check is None:
            return
        lines = [line for setting in check.needs_change for line in setting.lines]
        if await self.app.push_screen_wait(ConfirmScreen(
                f"Fix the sshd of {self.name_}?",
                f"Writes to {check.config_file} (as {check.privilege}):\n" + "\n".join(f"  {line}" for line in lines)
                + "\nthen sshd -t (refused: the file is put back) and a reload of sshd.", yes="Fix", wide=True)):
            self._run(True)

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)
