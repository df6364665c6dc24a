"""A DataTable that drops columns by priority when its width cannot show them all, instead of cutting the last
ones at its edge: the least important column goes first, the rest stay whole and in their order."""

from __future__ import annotations

from dataclasses import dataclass

from rich.cells import cell_len
from textual import events
from textual.widgets import DataTable

from console.ui.widgets.tables import fill


@dataclass(frozen=True)
class Col:
    label: str
    rank: int  # 0 is always shown; among the others a higher rank is dropped first


class FittedTable(DataTable):
    """Rows are given whole (every column, `show`); the table shows the columns that fit its width, keeping
    every column of a rank lower than the first one that does not fit. `row(key)` gives a row's every cell."""

    def __init__(self, columns: tuple[Col, ...], **kwargs) -> None:
        super().__init__(**kwargs)
        self.all_columns = columns
        self.rows_wanted: dict[str, tuple[str, ...]] = {}
        self.shown: tuple[int, ...] = ()  # indexes into all_columns

    def on_mount(self) -> None:
        self._set_columns(tuple(range(len(self.all_columns))))

    def row(self, key: str) -> tuple[str, ...]:
        return self.rows_wanted[key]

    def show(self, rows: dict[str, tuple[str, ...]]) -> bool:
        """Show these rows (key -> every column's cell). True if the rows were rebuilt."""
        self.rows_wanted = rows
        return self._refit()

    def on_resize(self, event: events.Resize) -> None:
        self._refit()

    def _refit(self) -> bool:
        wanted = self._fitting()
        rebuilt = False
        if wanted != self.shown:
            self._set_columns(wanted)
            rebuilt = True
        return fill(self, {key: tuple(cells[i] for i in self.shown) for key, cells in self.rows_wanted.items()}) \
            or rebuilt

    def _set_columns(self, wanted: tuple[int, ...]) -> None:
        row = self.cursor_row
        self.clear(columns=True)
        self.shown = wanted
        self.add_columns(*(self.all_columns[i].label for i in wanted))
        for key, cells in self.rows_wanted.items():
            self.add_row(*(cells[i] for i in wanted), key=key)
        if self.row_count:
            self.move_cursor(row=min(row, self.row_count - 1))

    def _fitting(self) -> tuple[int, ...]:
        width = self.size.width  # inside the border and padding already
        if width <= 0:  # not laid out yet: everything, until the first resize says how much room there is
            return tuple(range(len(self.all_columns)))
        if len(self.rows_wanted) + self.header_height > self.size.height:
            width -= self.styles.scrollbar_size_vertical
        pad = 2 * self.cell_padding
        need = [max([cell_len(col.label)] + [cell_len(str(cells[i])) for cells in self.rows_wanted.values()]) + pad
                for i, col in enumerate(self.all_columns)]
        keep: set[int] = set()
        used = 0
        for i in sorted(range(len(self.all_columns)), key=lambda i: self.all_columns[i].rank):
            if used + need[i] > width and self.all_columns[i].rank > 0:
                break
            keep.add(i)
            used += need[i]
        return tuple(sorted(keep))
