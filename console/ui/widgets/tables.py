"""DataTable helpers: fill a table in place, and the short time stamp and the age the tables show."""

from __future__ import annotations

import calendar
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from textual.widgets import DataTable


def fill(table: DataTable, wanted: dict[str, tuple[str, ...]]) -> bool:
    """Show `wanted` (row key -> cells). Cells change in place while the rows stay the same, so the cursor
    (and with it the operator's selection) never moves because of an update. True if rows were rebuilt."""
    keys = [row.key.value for row in table.ordered_rows]
    if keys == list(wanted):
        columns = [column.key for column in table.ordered_columns]
        for key, cells in wanted.items():
            for column, value in zip(columns, cells, strict=True):
                if table.get_cell(key, column) != value:
                    table.update_cell(key, column, value, update_width=True)  # "54 B" -> "108 B" fits
        return False
    row = table.cursor_row
    table.clear()
    for key, cells in wanted.items():
        table.add_row(*cells, key=key)
    if table.row_count:
        table.move_cursor(row=min(row, table.row_count - 1))
    return True


def short_time(stamp: str | None) -> str:
    """'2026-11-22T10:00:00Z' -> '11-22 10:00:00': the date matters after a weekend, the year rarely."""
    if not stamp:
        return ""
    return f"{stamp[5:10]} {stamp[11:19]}"


def age(stamp: str | None, now: float) -> str:
    """'2026-11-22T10:00:00Z' -> '4 min ago' at `now` (epoch seconds); "" without a stamp or for one not read."""
    if not stamp:
        return ""
    try:
        then = calendar.timegm(time.strptime(stamp[:19], "%Y-%m-%dT%H:%M:%S"))
    except ValueError:
        return ""
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"
