"""The operator's SSH login: what it may run besides the console.

sshd runs the account's ForceCommand line (`sop-console --state-dir /var/lib/sop-console`, README "Operator
logins") for every session, and puts what the client asked for in SSH_ORIGINAL_COMMAND: `ssh operator@host status
--json` sets it to "status --json". When it is set and the forced line names no command of its own, the original
command is split with shlex (it never reaches a shell) and must be exactly one of the read-only commands below, so
monitoring scripts can use the same account; it then runs with the forced line's options (its --config and
--state-dir: the client cannot choose them). Anything else (a shell command, `sftp`'s subsystem, another
subcommand, an extra option) is refused with one line on stderr and exit 2. With no original command (`ssh -t`)
the console opens as before.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence

ENV = "SSH_ORIGINAL_COMMAND"
ALLOWED = "status, status --json, log, log -n N"
_NUMBER = re.compile(r"[0-9]{1,7}")


class Refused(Exception):
    """The original command is not one the login runs; str() is the one line the client sees."""


def _allowed(words: list[str]) -> bool:
    match words:
        case ["status"] | ["status", "--json"] | ["log"]:
            return True
        case ["log", "-n", number]:
            return bool(_NUMBER.fullmatch(number))
    return False


def original_command(forced_argv: Sequence[str], environ: Mapping[str, str]) -> list[str] | None:
    """The argv to run for an SSH session's original command: the forced line's own arguments (options only)
    followed by the allowed command. None when there is no original command (the console opens).
    Raises Refused for anything not in ALLOWED."""
    text = environ.get(ENV)
    if text is None or not text.strip():
        return None
    try:
        words = shlex.split(text)
    except ValueError:  # unbalanced quotes
        words = None
    if words is None or not _allowed(words):
        shown = text if len(text) <= 60 else text[:57] + "..."
        raise Refused(f"this login runs the console, or only: {ALLOWED} (refused: {shown!r})")
    return [*forced_argv, *words]
