"""Toggles whose state is a glyph, not a colour alone (NO_COLOR, a monochrome terminal): Textual draws every radio
button, checkbox and selection-list box with the same glyph and tells on from off by colour only. Here an
unchosen one is blank inside its box."""

from __future__ import annotations

from rich.segment import Segment
from textual.strip import Strip
from textual.widgets import Checkbox, RadioButton, SelectionList
from textual.widgets._toggle_button import ToggleButton


class Choice(RadioButton):
    """A radio button: `●` when chosen, blank when not."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802 - the name ToggleButton draws with
        return "●" if self.value else " "


class Tick(Checkbox):
    """A checkbox: `✓` when ticked, blank when not."""

    @property
    def BUTTON_INNER(self) -> str:  # noqa: N802
        return "✓" if self.value else " "


class MarkList(SelectionList):
    """A selection list (space marks an entry): `✓` in the box of a marked entry, blank in the others."""

    def render_line(self, y: int) -> Strip:
        strip = super().render_line(y)
        index = int(self.scroll_offset.y) + y
        if index >= self.option_count:
            return strip
        segments = list(strip)
        if len(segments) > 1 and segments[1].text == ToggleButton.BUTTON_INNER:  # the box's inside
            marked = self.get_option_at_index(index).value in self.selected
            segments[1] = Segment("✓" if marked else " ", segments[1].style)
            return Strip(segments, strip.cell_length)
        return strip
