"""Export the operation log's entries the screen shows: which columns, CSV or JSON, which file."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from textual import on
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Grid, Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Checkbox, Input, Label, RadioButton, RadioSet, Static

from console.core.errors import os_reason
from console.core.oplog import FORMATS, export_rows, write_export
from console.core.paths import atomic_file
from console.core.status import OpEntry
from console.core.words import counted

DEFAULT_NAME = "~/sop-operations"


class ExportScreen(ModalScreen[None]):
    """The columns as checkboxes (all ticked), the format, the file name (`~` works; the extension follows the
    format while the name is the default). Export writes the file (0600, atomically; an existing file is not
    overwritten) and says where and how many entries; the dialog stays so the operator reads it, esc closes."""

    DEFAULT_CSS = """
    ExportScreen { align: center middle; }
    #export-columns { grid-size: 4; grid-gutter: 0 1; height: auto; margin-bottom: 1; }
    #export-format { height: auto; width: 100%; layout: horizontal; border: none; margin-bottom: 1; }
    #export-format RadioButton { width: auto; margin-right: 2; }
    #export-file { margin-bottom: 1; }
    #export-said { height: auto; }
    #export-said.-error { color: $error; }
    #export-said.-done { color: $success; }
    """

    BINDINGS = [Binding("escape", "close", "Close", id="export.close")]

    def __init__(self, entries: list[OpEntry]) -> None:
        super().__init__()
        self.entries = entries
        self.written: Path | None = None

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Export the {counted(len(self.entries), 'entry', 'entries')} shown", classes="dialog-title")
            with Grid(id="export-columns"):
                for column in OpEntry.COLUMNS:
                    yield Checkbox(column, True, id=f"col-{column}", compact=True)
            with RadioSet(id="export-format"):
                for fmt in FORMATS:
                    yield RadioButton(fmt.upper(), fmt == "csv", id=f"fmt-{fmt}", compact=True)
            yield Input(f"{DEFAULT_NAME}.csv", placeholder="file to write", id="export-file")
            yield Static("", id="export-said")
            with Horizontal(classes="buttons"):
                yield Button("Export", id="export", variant="primary")
                yield Button("Close", id="close")

    def on_mount(self) -> None:
        self.query_one("#export-file", Input).focus()

    def columns(self) -> tuple[str, ...]:
        return tuple(c for c in OpEntry.COLUMNS if self.query_one(f"#col-{c}", Checkbox).value)

    def format(self) -> str:
        pressed = self.query_one("#export-format", RadioSet).pressed_button
        return pressed.id.removeprefix("fmt-") if pressed is not None and pressed.id else "csv"

    @on(RadioSet.Changed, "#export-format")
    def _format_changed(self) -> None:
        name = self.query_one("#export-file", Input)
        if name.value.startswith(DEFAULT_NAME + "."):
            name.value = f"{DEFAULT_NAME}.{self.format()}"

    @on(Input.Submitted, "#export-file")
    @on(Button.Pressed, "#export")
    async def action_export(self) -> None:
        columns, fmt = self.columns(), self.format()
        text = self.query_one("#export-file", Input).value.strip()
        if not columns:
            self._said("✖ tick at least one column", error=True)
            return
        if not text:
            self._said("✖ name the file to write", error=True)
            return
        path = Path(text).expanduser().absolute()
        if path.exists():
            self._said(f"✖ {path} exists: not overwritten; name a new file", error=True)
            return
        try:
            count = await asyncio.to_thread(_write, path, self.entries, columns, fmt)
        except OSError as exc:
            self._said(f"✖ cannot write {path}: {getattr(exc, 'message', None) or os_reason(exc)}", error=True)
            return
        self.written = path
        self._said(f"✔ wrote {counted(count, 'entry', 'entries')} ({fmt.upper()}, {len(columns)} columns) to {path}")

    def _said(self, text: str, *, error: bool = False) -> None:
        said = self.query_one("#export-said", Static)
        said.update(text)
        said.set_class(error, "-error")
        said.set_class(not error, "-done")

    @on(Button.Pressed, "#close")
    def action_close(self) -> None:
        self.dismiss(None)


def _write(path: Path, entries: list[OpEntry], columns: tuple[str, ...], fmt: str) -> int:
    if not path.parent.is_dir():
        raise FileNotFoundError(2, os.strerror(2), str(path.parent))
    with atomic_file(path, 0o600) as out:
        return write_export(export_rows(entries, columns, fmt), columns, fmt, out)
