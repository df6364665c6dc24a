"""Keys typed in one burst with the key that opens a text box: they belong in the box.

Textual routes a key to the widget focused when the key is read, not when it is handled: `/` and the text typed
right after it (a fast typist, a paste without bracketed paste, tmux send-keys) are all queued to the widget
focused before, and the box that `/` opens and focuses gets none of them; they bubble up to the App, whose
bindings take them (`1` opened Install ssh key, `q` quit). See docs/textual-input-burst.md."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual.widgets import Input

if TYPE_CHECKING:
    from textual.app import App
    from textual.events import Key


def type_into_focused_input(app: App, event: Key) -> bool:
    """From the App's key handler, before its bindings: a printable key that bubbled up to the App while an Input
    has the focus was read before the Input got it (a key the Input receives stops there): type it into the Input,
    as the Input itself would. True if it did."""
    focused = app.focused
    if isinstance(focused, Input) and event.is_printable and event.character:
        focused.insert_text_at_cursor(event.character)
        event.stop()
        event.prevent_default()
        return True
    return False
