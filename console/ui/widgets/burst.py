"""Keys typed in one burst with the key that opens a text box: they belong in the box, all of them, in order.

Textual routes a key to the widget focused when the key is read, not when it is handled: `/` and the text typed
right after it (a fast typist, a paste without bracketed paste, tmux send-keys) are all queued to the widget
focused before. The `/` binding runs when `/` has bubbled back up to the App, so the keys behind it are still on
their way up through the old widget's ancestors, and the keys read after that go straight to the box: they
overtake the ones in flight (`xyz0` arrived as `z0xy`). The box also selects its text when its Focus event is
handled, after keys typed into it by then: the next key replaced them. See docs/textual-input-burst.md.

KeyHold, run by the App: a binding that opens a box (`/`, `a` on Clients) calls `hold()` at once. From then on
every key that reaches the App, on its way up from the old widget or fresh from the terminal, is held, in the
order it was read, until both (1) a marker posted behind the keys in flight has come back up (they have all
arrived) and (2) an Input has the focus and has handled its Focus event. Then the held keys are sent to that Input
in order, as if typed there, and keys are routed as usual again. A box that does not open within HOLD_SECONDS
gets nothing: the keys typed for it are dropped (with a warning), not run as commands."""

from __future__ import annotations

from typing import TYPE_CHECKING

from textual import events
from textual.app import ScreenStackError
from textual.message import Message
from textual.widgets import Input

if TYPE_CHECKING:
    from textual.app import App
    from textual.dom import DOMNode
    from textual.timer import Timer
    from textual.widget import Widget

HOLD_SECONDS = 2.0  # a box asked for and not focused by then is not coming: drop what was held for it


class EndOfBurst(Message):
    """Posted behind the keys in flight to the widget they were sent to: when it reaches the App, they all have."""

    def __init__(self, hold: int) -> None:
        super().__init__()
        self.hold = hold


class KeyHold:
    """Holds the keys typed for a text box until it can take them (see the module's text). The App calls `raw`
    for each key fresh from the terminal and `bubbled` for each key that bubbled up to it; both say whether the
    key was held (the App then does nothing else with it)."""

    def __init__(self, app: App) -> None:
        self.app = app
        self.holding = False
        self._serial = 0                 # which hold an EndOfBurst belongs to
        self._in_flight = False          # the keys sent before the hold have not all come back yet
        self._target: DOMNode | None = None  # the widget the last key from the terminal was sent to
        self._bubbled: list[events.Key] = []  # keys read before the hold, in the order they come back
        self._fresh: list[events.Key] = []    # keys read during the hold: after all of those
        self._timer: Timer | None = None

    def hold(self) -> None:
        """A box is opening: hold every key from now on until it has the focus (in place at once)."""
        if self.holding:
            return
        self.holding = True
        self._serial += 1
        target = self._target
        self._in_flight = target is not None and target.is_attached and target.is_running
        if self._in_flight:
            target.post_message(EndOfBurst(self._serial))
        self._timer = self.app.set_timer(HOLD_SECONDS, self._expired)

    def raw(self, event: events.Key) -> bool:
        """A key fresh from the terminal. True if held; else the App sends it on, and it is noted where to."""
        if self.holding:
            self._fresh.append(event)
            return True
        try:
            self._target = self.app.focused or self.app.screen
        except ScreenStackError:  # starting, or closing: no screen to send it to
            self._target = None
        return False

    def bubbled(self, event: events.Key) -> bool:
        """A key that bubbled up to the App, before its bindings. True if held: the App's bindings must not see
        it."""
        if not self.holding and self._stray(event):
            self.hold()  # a box took the focus by other means (a dialog, tab) with keys still on their way
        if not self.holding:
            return False
        self._bubbled.append(events.Key(event.key, event.character))
        event.stop()
        event.prevent_default()
        return True

    def _stray(self, event: events.Key) -> bool:
        """A printable key that bubbled up to the App while an Input has the focus: an Input stops every printable
        key it receives, so this one was read before the Input got the focus."""
        return isinstance(self._focused(), Input) and event.is_printable and bool(event.character)

    def _focused(self) -> Widget | None:
        try:
            return self.app.focused
        except ScreenStackError:
            return None

    def end_of_burst(self, message: EndOfBurst) -> None:
        message.stop()
        if self.holding and message.hold == self._serial:
            self._in_flight = False
            self.check()

    def check(self) -> None:
        """Release the held keys into the box once it can take them (call on any focus change)."""
        box = self._focused()
        if self.holding and not self._in_flight and isinstance(box, Input) and box.has_focus:
            self._release(box)

    def _expired(self) -> None:
        box = self._focused()
        if self.holding:
            if isinstance(box, Input):
                self._release(box)
            else:
                dropped = len(self._bubbled) + len(self._fresh)
                self._end()
                if dropped:
                    self.app.notify(f"{dropped} key{'s' if dropped != 1 else ''} typed for a box that did not open "
                                    "were dropped", severity="warning")

    def _release(self, box: Input) -> None:
        """The held keys to the box, in order, through its queue: keys read after this go there after them."""
        keys = self._bubbled + self._fresh
        self._end()
        for key in keys:
            box._forward_event(events.Key(key.key, key.character))

    def _end(self) -> None:
        self.holding = False
        self._in_flight = False
        self._bubbled, self._fresh = [], []
        if self._timer is not None:
            self._timer.stop()
            self._timer = None
