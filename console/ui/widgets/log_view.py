"""The tunnel log viewer: reads only the lines on screen through a LogIndex, follows the file like
`tail -F`, filters to matching lines and searches with n/N."""

from __future__ import annotations

import time
from array import array
from pathlib import Path

from rich.segment import Segment
from rich.style import Style
from textual import work
from textual.binding import Binding
from textual.geometry import Size
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.core.log_index import LogIndex
from console.ui.messages import FollowChanged

POLL_SECONDS = 0.25
HEAD_CHUNK = 2 * 1024 * 1024  # bytes indexed between two yields to the UI thread


class LogView(ScrollView, can_focus=True):
    BINDINGS = [
        Binding("end,G", "follow", "Follow", id="log.follow"),
        Binding("home,g", "scroll_home", "Top", show=False, id="log.top"),
        Binding("j,down", "scroll_down", "Down", show=False, id="log.down"),
        Binding("k,up", "scroll_up", "Up", show=False, id="log.up"),
        Binding("n", "next_match", "Next", id="log.next"),
        Binding("N", "previous_match", "Prev", id="log.previous"),
    ]

    HELP = """\
**Tunnel log.** `end` / `G` follows the end of the file (badge FOLLOW); scrolling up pauses (PAUSED).

`/` shows only the lines that contain a text (`esc` clears it), `s` searches, `n` / `N` jump to the next and
the previous hit. `?` is this help, as everywhere.
"""

    def __init__(self, path: Path, *, poll: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = LogIndex(path)
        self.following = True
        self.filter_text = ""
        self.search_text = ""
        self._rows: array | None = None   # line numbers shown when a filter is on
        self._current = -1                 # the search hit under the cursor (a row number)
        self._poll = poll

    # ------------------------------------------------------------------ life cycle

    def on_mount(self) -> None:
        self.index.open()
        self.call_after_refresh(self._index_head)  # the tail is on screen first, then the head is indexed
        if self._poll:
            self.set_interval(POLL_SECONDS, self._tick)

    def on_resize(self) -> None:
        self._sync()  # also the first sync: before the first layout the view has no size to scroll in

    @property
    def bottom_row(self) -> int:
        """The last row on screen."""
        return min(int(self.scroll_offset.y) + self.size.height, self.row_count) - 1

    def on_unmount(self) -> None:
        self.index.close()

    @work(thread=True, exclusive=True, group="log-index")
    def _index_head(self) -> None:
        """Index the rest of the file off the UI thread, a chunk at a time, letting the UI run in between."""
        while not self.index.index_more(budget=HEAD_CHUNK):
            time.sleep(0.001)
        self.app.call_from_thread(self._sync)

    def _tick(self) -> None:
        if not self.index.complete:
            return  # the indexing thread owns the index until it is done (under a second for 100 MB)
        if self.index.refresh() != "same":
            if self._rows is not None:
                self._apply_filter()
            self._sync()
            if not self.index.complete:
                self._index_head()

    # ------------------------------------------------------------------ rows

    @property
    def row_count(self) -> int:
        return len(self._rows) if self._rows is not None else self.index.count

    def _line_of_row(self, row: int) -> int:
        return self._rows[row] if self._rows is not None else row

    def _sync(self) -> None:
        width = max((len(self.index.line(self._line_of_row(r))) for r in self._visible_rows()), default=0)
        self.virtual_size = Size(max(width, self.size.width), self.row_count)
        if self.following:  # after the refresh: the new virtual size sets how far down "end" is
            self.call_after_refresh(self._follow_end)
        self.refresh()

    def _follow_end(self, tries: int = 3) -> None:
        """Scroll to the last line. force: the refresh may come before the layout that gives the view its scroll
        bar, and without one Textual refuses to scroll. Again after the next refresh while short of the end: the
        rows now in view can be wider than those before, and the horizontal scroll bar that appears then takes a
        line (the last line stayed hidden until the log grew)."""
        if not self.following:
            return
        self.scroll_end(animate=False, immediate=True, force=True)
        if tries:
            self.call_after_refresh(self._follow_again, tries - 1)

    def _follow_again(self, tries: int) -> None:
        if self.following and self.scroll_y < self.max_scroll_y:
            self._follow_end(tries)

    def _visible_rows(self) -> range:
        top = int(self.scroll_offset.y)
        return range(top, min(top + max(self.size.height, 1), self.row_count))

    def render_line(self, y: int) -> Strip:
        row = int(self.scroll_offset.y) + y
        if row >= self.row_count:
            return Strip.blank(self.size.width, self.rich_style)
        text = self.index.line(self._line_of_row(row))
        x = int(self.scroll_offset.x)
        text = text[x:x + self.size.width]
        style = self.rich_style
        if row == self._current:
            style = style + Style(reverse=True)
        segments = [Segment(text.ljust(self.size.width), style)]
        return Strip(segments, self.size.width)

    # ------------------------------------------------------------------ follow

    def _set_following(self, following: bool) -> None:
        if following != self.following:
            self.following = following
            self.post_message(FollowChanged(following))

    def action_follow(self) -> None:
        self._set_following(True)
        self._current = -1
        self.scroll_end(animate=False, immediate=True, force=True)
        self.refresh()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if new < old and new < self.max_scroll_y:
            self._set_following(False)  # scrolling up pauses; `end` resumes

    def action_scroll_up(self) -> None:
        self._set_following(False)
        super().action_scroll_up()

    def action_scroll_home(self) -> None:
        self._set_following(False)
        super().action_scroll_home()

    # ------------------------------------------------------------------ filter and search

    def set_filter(self, text: str) -> None:
        self.filter_text = text
        self._apply_filter()
        self._current = -1
        self._sync()

    def _apply_filter(self) -> None:
        self._rows = self.index.matching(self.filter_text) if self.filter_text else None

    def set_search(self, text: str) -> None:
        self.search_text = text
        self._current = -1
        self.action_next_match()

    def _matches(self) -> list[int]:
        """Rows whose line matches the search (within the filtered rows when a filter is on)."""
        if not self.search_text:
            return []
        lines = self.index.matching(self.search_text)
        if self._rows is None:
            return list(lines)
        shown = {line: row for row, line in enumerate(self._rows)}
        return [shown[line] for line in lines if line in shown]

    def _jump(self, rows: list[int], forward: bool) -> None:
        if not rows:
            self.notify(f"no line matches {self.search_text!r}", severity="warning")
            return
        here = self._current if self._current >= 0 else (int(self.scroll_offset.y) + self.size.height - 1)
        if forward:
            target = next((r for r in rows if r > here), rows[0])
        else:
            target = next((r for r in reversed(rows) if r < here), rows[-1])
        self._current = target
        self._set_following(False)
        self.scroll_to(y=max(0, target - self.size.height // 2), animate=False, immediate=True, force=True)
        self.refresh()

    def action_next_match(self) -> None:
        self._jump(self._matches(), forward=True)

    def action_previous_match(self) -> None:
        self._jump(self._matches(), forward=False)
