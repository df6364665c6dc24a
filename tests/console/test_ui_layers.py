"""The console package's own layering: a Session without Textual, and a start that imports only the main screen."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path


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


ROOT = Path(__file__).resolve().parents[2]
UI_MAY_IMPORT = ("console.ui", "console.control", "console.core", "console.daemon",
                 "console.tunnel.key_install")  # key install: the same code path as `sop-console key install`


def _imports(path: Path) -> list[str]:
    names = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.append(node.module)
    return names


def test_textual_is_imported_only_by_the_ui_and_the_cli():
    offenders = []
    for path in (ROOT / "console").rglob("*.py"):
        relative = path.relative_to(ROOT / "console").parts
        if relative[0] in ("ui", "cli", "cli.py"):
            continue
        offenders += [f"{path.relative_to(ROOT)} imports {name}" for name in _imports(path)
                      if name.split(".")[0] == "textual"]
    assert offenders == []


def test_the_ui_imports_the_control_client_core_and_daemon_only():
    offenders = []
    for path in (ROOT / "console" / "ui").rglob("*.py"):
        for name in _imports(path):
            if name.startswith("console") and name != "console" and not name.startswith(UI_MAY_IMPORT):
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert offenders == []
