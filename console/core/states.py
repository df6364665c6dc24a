"""Every state an operator can see has a word and a glyph, never a colour alone."""

from __future__ import annotations

GLYPHS = {
    # units
    "up": "●", "degraded": "◐", "retrying": "↻", "connecting": "◌", "stopped": "■",
    "auth-failed": "✖", "host-key-unknown": "?", "host-key-mismatch": "✖",
    # forwards
    "listening": "●", "pending": "◌", "refused": "✖",
}


def label(state: str) -> str:
    return f"{GLYPHS.get(state, '·')} {state}"


def human_bytes(n: int) -> str:
    value = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if value < 1000 or unit == "TB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{n} B"
