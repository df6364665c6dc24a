"""What the console loads when it starts (import-time, not the static contracts of pyproject.toml, which
tests/unit/test_layers.py runs): the Session and the menu table without Textual, and only the main screen."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    code = f"{statement}\nimport sys\nprint('\\n'.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_session_and_the_menu_table_need_no_textual():
    loaded = _modules_after("import console.ui.session, console.ui.menu, console.ui.backend")
    assert not [m for m in loaded if m.split(".")[0] in ("textual", "rich")]


def test_console_start_imports_the_main_screen_and_nothing_behind_the_menu():
    loaded = _modules_after("import console.ui.app")
    assert "console.ui.screens.main" in loaded
    later = [m for m in loaded if m.startswith(("console.ui.screens.", "console.ui.dialogs."))
             and m != "console.ui.screens.main"]
    assert later == []
    assert "console.ui.widgets.log_view" not in loaded
