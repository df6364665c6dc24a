"""The tunnel log viewer: reads only the lines on screen through a LogIndex, follows the file like
`tail -F`, filters to matching lines, searches with n/N (hits highlighted) and cuts or wraps long lines
(`w`, like `less -S`)."""

from __future__ import annotations

import time
from array import array
from pathlib import Path

from rich.style import Style
from rich.text import Text
from textual import work
from textual.binding import Binding
from textual.geometry import Size
from textual.message import Message
from textual.scroll_view import ScrollView
from textual.strip import Strip

from console.core.log_index import LogIndex
from console.ui.messages import FollowChanged

POLL_SECONDS = 0.25
HEAD_CHUNK = 2 * 1024 * 1024  # bytes indexed between two yields to the UI thread
CUT, CUT_LEFT = "›", "‹"  # where a line goes on past the right edge, and where it began left of the view


class LogView(ScrollView, can_focus=True):
    """Scrolling is by log line in both modes: scroll_y is the row at the top. Wrapped, a row takes as many
    screen lines as its text needs, and the end is the top row from which the last rows just fit."""

    COMPONENT_CLASSES = {"log-view--hit", "log-view--cut"}
    DEFAULT_CSS = """
    LogView > .log-view--hit { background: $accent; color: $background; text-style: bold underline; }
    LogView > .log-view--cut { color: $accent; text-style: bold; }
    """

    class HitMoved(Message):
        """The search hit under the cursor changed (see LogView.hit)."""

    BINDINGS = [
        Binding("end,G", "follow", "Follow", id="log.follow"),
        Binding("home,g", "scroll_home", "Top", show=False, id="log.top"),
        Binding("j,down", "scroll_down", "Down", show=False, id="log.down"),
        Binding("k,up", "scroll_up", "Up", show=False, id="log.up"),
        Binding("n", "next_match", "Next", id="log.next"),
        Binding("N", "previous_match", "Prev", id="log.previous"),
        Binding("w", "toggle_wrap", "Wrap", id="log.wrap"),
    ]

    HELP = """\
**Tunnel log.** `end` / `G` follows the end of the file (badge FOLLOW); scrolling up pauses (PAUSED).

`/` shows only the lines that contain a text (`esc` clears it), `s` searches, `n` / `N` jump to the next and
the previous hit; hits are highlighted and the badge says `hit n of m`.

`w` wraps long lines, or cuts them again (like `less -S`): cut, the default, a line that goes on past the
right edge ends in `›` (`‹` where it began left of the view); `left` / `right` scroll sideways. `?` is this help,
as everywhere.
"""

    def __init__(self, path: Path, *, poll: bool = True, id: str | None = None) -> None:
        super().__init__(id=id)
        self.index = LogIndex(path)
        self.following = True
        self.filter_text = ""
        self.search_text = ""
        self._rows: array | None = None   # line numbers shown when a filter is on
        self._current = -1                 # the search hit under the cursor (a row number)
        self.hit: tuple[int, int] | None = None  # (n, m): the hit under the cursor is the n-th of m
        self.wrap = False                  # long lines wrapped (True) or cut with a marker (False)
        self._end_top = 0                  # wrapped: the top row from which the last rows fill the view
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
        """The last row on screen (wrapped: at least partly)."""
        if self.wrap:
            layout = self._layout()
            return layout[-1][0] if layout else -1
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
        if self.wrap:
            self._end_top = self._top_for_tail()
            self.virtual_size = Size(self._width, self._end_top + max(self.size.height, 1))
        else:
            self.virtual_size = Size(self._widest(), self.row_count)
        if self.following:  # after the refresh: the new virtual size sets how far down "end" is
            self.call_after_refresh(self._follow_end)
        self.refresh()

    def _widest(self) -> int:
        """The virtual width, cut: the widest row in view (read again as the view scrolls)."""
        width = max((len(self.index.line(self._line_of_row(r))) for r in self._visible_rows()), default=0)
        return max(width + 1, self.size.width)  # + 1: the `›` of a cut line takes the last column

    def _follow_end(self, tries: int = 3) -> None:
        """Scroll to the last line. force: the refresh may come before the layout that gives the view its scroll
        bar, and without one Textual refuses to scroll. Again after the next refresh while short of the end (the
        layout may have changed the view's height since: the last line stayed hidden until the log grew)."""
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

    @property
    def _width(self) -> int:
        """Columns for text: the view's width less its vertical scroll bar."""
        return self.scrollable_content_region.width or self.size.width

    def _height_of(self, row: int) -> int:
        """Screen lines a row takes wrapped."""
        width = max(self._width, 1)
        return max(1, -(-len(self.index.line(self._line_of_row(row))) // width))

    def _top_for_tail(self) -> int:
        """Wrapped: the top row from which the last rows fill the view (the whole last row at the bottom)."""
        room, top = max(self.size.height, 1), self.row_count
        while top > 0 and room - self._height_of(top - 1) >= 0:
            top -= 1
            room -= self._height_of(top)
        return min(top, max(self.row_count - 1, 0))

    def _layout(self) -> list[tuple[int, int]]:
        """(row, first column) of each screen line, top to bottom."""
        top, height = int(self.scroll_offset.y), max(self.size.height, 1)
        if not self.wrap:
            x = int(self.scroll_offset.x)
            return [(row, x) for row in range(top, min(top + height, self.row_count))]
        width, layout = max(self._width, 1), []
        row = top
        while len(layout) < height and row < self.row_count:
            layout.extend((row, start) for start in range(0, self._height_of(row) * width, width))
            row += 1
        return layout[:height]

    def render_line(self, y: int) -> Strip:
        width = self._width
        layout = self._layout()
        if y >= len(layout):
            return Strip.blank(width, self.rich_style)
        row, start = layout[y]
        line = self.index.line(self._line_of_row(row))
        style = self.rich_style
        if row == self._current:
            style = style + Style(reverse=True)
        text = Text(line[start:start + width], style=style, no_wrap=True, end="")
        if self.search_text:
            hit = self.get_component_rich_style("log-view--hit", partial=True)
            needle, haystack, at = self.search_text.lower(), line.lower(), 0
            while (at := haystack.find(needle, at)) >= 0:
                text.stylize(hit, max(at - start, 0), max(at + len(needle) - start, 0))
                at += len(needle)
        if not self.wrap and width > 1:
            cut = self.get_component_rich_style("log-view--cut", partial=True)
            if len(line) > start + width:
                text = text[:width - 1]
                text.append(CUT, style + cut)
            if start > 0 and line:
                text = Text(CUT_LEFT, style=style + cut, end="") + text[1:]
        strip = Strip(text.render(self.app.console), text.cell_len)
        return strip.adjust_cell_length(width, style)

    # ------------------------------------------------------------------ wrap

    def action_toggle_wrap(self) -> None:
        """Wrap long lines, or cut them with a marker (like `less -S`); the top row stays, or the end is followed."""
        self.wrap = not self.wrap
        if self.wrap:
            self.scroll_to(x=0, animate=False, immediate=True, force=True)
        self._sync()
        if not self.wrap and not self.following:
            self.call_after_refresh(self._sync)  # the width of the rows now in view

    # ------------------------------------------------------------------ follow

    def _set_following(self, following: bool) -> None:
        if following != self.following:
            self.following = following
            self.post_message(FollowChanged(following))

    def action_follow(self) -> None:
        self._set_following(True)
        self._set_current(-1, None)
        self.scroll_end(animate=False, immediate=True, force=True)
        self.refresh()

    def watch_scroll_y(self, old: float, new: float) -> None:
        super().watch_scroll_y(old, new)
        if not self.wrap and self.virtual_size.width != (width := self._widest()):
            self.virtual_size = Size(width, self.row_count)  # right scrolls as far as the widest row in view
        if new < old and new < self.max_scroll_y:
            self._set_following(False)  # scrolling up pauses; `end` resumes

    def watch_show_vertical_scrollbar(self, shown: bool) -> None:
        """Textual moves the scroll bar's thumb only while the bar is shown: the view opened on the tail (scrolled
        before its first layout) kept the thumb at the top, or not, as that layout came before or after."""
        if shown:
            self.vertical_scrollbar.position = self.scroll_y

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
        self._set_current(-1, None)
        self._sync()

    def _apply_filter(self) -> None:
        self._rows = self.index.matching(self.filter_text) if self.filter_text else None

    def set_search(self, text: str) -> None:
        self.search_text = text
        self._set_current(-1, None)
        if text:
            self.action_next_match()
        self.refresh()

    def _set_current(self, row: int, hit: tuple[int, int] | None) -> None:
        self._current = row
        if hit != self.hit:
            self.hit = hit
            self.post_message(self.HitMoved())

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
        self._set_current(target, (rows.index(target) + 1, len(rows)))
        self._set_following(False)
        top, room = target, self.size.height // 2  # the hit about the middle of the view
        if self.wrap:
            while top > 0 and room - self._height_of(top - 1) >= 0:
                top -= 1
                room -= self._height_of(top)
        else:
            top = max(0, target - room)
        self.scroll_to(y=top, animate=False, immediate=True, force=True)
        self.refresh()

    def action_next_match(self) -> None:
        self._jump(self._matches(), forward=True)

    def action_previous_match(self) -> None:
        self._jump(self._matches(), forward=False)
