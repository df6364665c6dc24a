"""Add a proxy rule: its direction, its text in the seed's syntax (checked as you type by the rule parser, so the
line under the box says what is wrong before Enter), and what it goes via."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.reactive import reactive
from textual.screen import ModalScreen
from textual.widget import Widget
from textual.widgets import Input, Label, Static

from console.core.errors import ConsoleError
from console.core.rules import LOCAL
from console.core.status import RuleStatus

ON, OFF = "◉", "○"   # the chosen option and the others: told by the glyph, not by colour alone


class Choice(Widget, can_focus=True):
    """One of a few words, on one line: `direction  ◉ ingress  ○ egress`. left / right (or space) choose."""

    DEFAULT_CSS = """
    Choice {
        height: 1;
        width: 1fr;
    }
    Choice:focus {
        background: $boost;
        text-style: bold;
    }
    """
    BINDINGS = [Binding("left", "move(-1)", "Previous", show=False),
                Binding("right,space", "move(1)", "Next", show=False)]

    value: reactive[str] = reactive("")

    class Changed(Message):
        def __init__(self, choice: Choice) -> None:
            super().__init__()
            self.choice = choice

    def __init__(self, label: str, options: list[str], **kwargs) -> None:
        super().__init__(**kwargs)
        self.label, self.options = label, options
        self.set_reactive(Choice.value, options[0])

    def render(self) -> Content:
        marks = "  ".join(f"{ON if option == self.value else OFF} {option}" for option in self.options)
        return Content(f"{self.label:<10} {marks}")

    def action_move(self, step: int) -> None:
        self.value = self.options[(self.options.index(self.value) + step) % len(self.options)]

    def watch_value(self) -> None:
        self.post_message(self.Changed(self))


class AddRuleScreen(ModalScreen[RuleStatus | None]):
    """The rule's text is checked with `problem(text)` (the rule parser's one line) on every key; Enter is refused
    while it says something, and otherwise sends `add(direction, text, via)` to the daemon: its refusal (a clash,
    already a rule) shows on the same line and the dialog stays. esc cancels."""

    DEFAULT_CSS = """
    AddRuleScreen {
        align: center middle;
    }
    #rule-check {
        height: auto;
        min-height: 2;
    }
    #rule-check.-problem {
        color: $error;
    }
    """
    BINDINGS = [Binding("escape", "cancel", "Cancel", id="add_rule.cancel")]

    def __init__(self, vias: list[str], problem: Callable[[str], str | None],
                 add: Callable[[str, str, str], Awaitable[RuleStatus]]) -> None:
        super().__init__()
        self.vias, self.problem, self.add = vias or [LOCAL], problem, add
        self._sending = False

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog", id="add-rule"):
            yield Label("Add a proxy rule", classes="dialog-title")
            yield Choice("direction", ["ingress", "egress"], id="rule-direction")
            yield Choice("via", self.vias, id="rule-via")
            yield Input(placeholder="tcp:8080:10.0.5.7:80", id="rule-text")
            yield Static("", id="rule-check")
            yield Static("enter adds, esc cancels; tab: direction, via (← →)", classes="dialog-text")

    def on_mount(self) -> None:
        self.query_one("#rule-text", Input).focus()
        self._check()

    @on(Input.Changed, "#rule-text")
    @on(Choice.Changed)
    def _changed(self) -> None:
        self._check()

    def _check(self) -> str | None:
        """Say at once what is wrong with the text, or what the rule will do; the problem, or None."""
        text = self.query_one("#rule-text", Input).value.strip()
        problem = self.problem(text) if text else None
        line = self.query_one("#rule-check", Static)
        line.set_class(problem is not None, "-problem")
        line.update(Content(f"✖ {problem}" if problem else self._meaning(text) if text else ""))
        return problem

    def _meaning(self, text: str) -> str:
        """What a rule that reads will do, in words: where it listens and where connections go."""
        protocol, port, destination = text.split(":", 2)
        via = self.query_one("#rule-via", Choice).value
        direction = self.query_one("#rule-direction", Choice).value
        what = "datagrams" if protocol.lower() == "udp" else "connections"
        if via == LOCAL:
            return f"● listens on port {port} here; {what} go to {destination}"
        if direction == "ingress":
            return (f"● {via}'s server listens on port {port}; {what} come through {via} and go to {destination} "
                    "from here")
        return f"● listens on port {port} here; {what} go through {via} to {destination} on its far side"

    @on(Input.Submitted, "#rule-text")
    def _submitted(self) -> None:
        text = self.query_one("#rule-text", Input).value.strip()
        problem = self.problem(text)  # an empty text too: "a rule is protocol:port:...; got nothing"
        if problem is not None:  # refused in place: the line says why, the text stays to be corrected
            self._refuse(problem)
            return
        if not self._sending:
            self._sending = True
            self._send(self.query_one("#rule-direction", Choice).value, text,
                       self.query_one("#rule-via", Choice).value)

    @work(group="add-rule")
    async def _send(self, direction: str, text: str, via: str) -> None:
        try:
            added = await self.add(direction, text, via)
        except ConsoleError as exc:  # the daemon refused it: a clash, already a rule, no daemon
            self._refuse(exc.message)
            return
        finally:
            self._sending = False
        self.dismiss(added)

    def _refuse(self, why: str) -> None:
        line = self.query_one("#rule-check", Static)
        line.set_class(True, "-problem")
        line.update(Content(f"✖ {why}"))

    def action_cancel(self) -> None:
        self.dismiss(None)
