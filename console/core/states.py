"""Every state an operator can see has a word and a glyph, never a colour alone: one table for both."""

from __future__ import annotations

from enum import StrEnum


class _State(StrEnum):
    """A state's value is its word (what `status --json` carries); `glyph` and `label` are how it is shown."""

    @property
    def glyph(self) -> str:
        return GLYPHS[self.value]

    @property
    def label(self) -> str:
        return f"{self.glyph} {self.value}"


class UnitState(_State):
    UP = "up"
    DEGRADED = "degraded"
    RETRYING = "retrying"
    CONNECTING = "connecting"
    STOPPED = "stopped"
    AUTH_FAILED = "auth-failed"
    HOST_KEY_UNKNOWN = "host-key-unknown"
    HOST_KEY_MISMATCH = "host-key-mismatch"


class ForwardState(_State):
    LISTENING = "listening"
    PENDING = "pending"
    REFUSED = "refused"
    STOPPED = "stopped"


class EndpointState(_State):
    """Whether units can log in to an endpoint (an SSH server) with their keys, as the last check found."""

    AVAILABLE = "available"
    UNAVAILABLE = "unavailable"
    UNCHECKED = "unchecked"


class SshdSettingState(_State):
    """How one sshd setting of an endpoint serves its units' forwards (the sshd check)."""

    OK = "ok"
    CHANGE = "needs-change"      # the forwards need another value: the check gives the line to write
    NOTE = "note"                # works, with a caveat worth reading (never changed by --fix)


class RuleState(_State):
    """A proxy rule's listener: listening, waiting (for what it travels through: a unit's connection, the unit
    transport), refused (it cannot listen: the reason says why; retried), stopped (no daemon runs it)."""

    LISTENING = "listening"
    WAITING = "waiting"
    REFUSED = "refused"
    STOPPED = "stopped"


class DestinationState(_State):
    """A rule's destination as its round robin sees it: up, or down (refused or failed its last connection: it
    is skipped for a few seconds, then tried again)."""

    UP = "up"
    DOWN = "down"


class EndpointReason(StrEnum):
    """Why an endpoint is unavailable: what the operator does about it differs for each (the check's hint says)."""

    OK = "ok"                            # available
    RESOLVE = "resolve"                  # the name does not resolve
    NETWORK = "network"                  # refused / timed out / unreachable (the address tried is in the message)
    NOT_SSH = "not-ssh"                  # something answered that is not an SSH server (what answered is said)
    HOST_KEY_UNKNOWN = "host-key-unknown"
    HOST_KEY_MISMATCH = "host-key-mismatch"
    PUBLICKEY = "publickey"              # our key was not accepted (the methods the server offers are listed)
    ACCOUNT = "account"                  # the server says the account is locked, expired, not allowed ...
    NO_KEY = "no-key"                    # we have no key for this login yet (make one: `key show UNIT`)
    PROTOCOL = "protocol"                # any other SSH-level failure, in the server's or asyncssh's words


GLYPHS = {
    # units
    "up": "●", "degraded": "◐", "retrying": "↻", "connecting": "◌", "stopped": "■",
    "auth-failed": "✖", "host-key-unknown": "?", "host-key-mismatch": "✖",
    # forwards
    "listening": "●", "pending": "◌", "refused": "✖",
    # endpoints
    "available": "●", "unavailable": "✖", "unchecked": "·",
    # sshd settings
    "ok": "●", "needs-change": "✖", "note": "!",
    # proxy rules (listening, refused, stopped as above) and their destinations (up as above)
    "waiting": "◌", "down": "✖",
}


def label(state: str) -> str:
    """Word and glyph; a word from a newer daemon that this console does not know shows with a neutral dot."""
    return f"{GLYPHS.get(state, '·')} {state}"


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
