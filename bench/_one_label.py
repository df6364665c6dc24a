"""The smallest Textual app: one label. bench/console_start.py starts it as it starts the console, for scale."""

from textual.app import App, ComposeResult
from textual.widgets import Label


class OneLabel(App):
    def compose(self) -> ComposeResult:
        yield Label("one label on screen")


if __name__ == "__main__":
    OneLabel().run()
