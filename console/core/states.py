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


def render_status(status: dict) -> str:
    """The human form of a status snapshot (`sop-console status`, the demo)."""
    lines = []
    for unit in status["units"]:
        lines.append(f"{unit['name']:<7} {label(unit['state']):<20} {unit['username']}@{unit['server']}")
        for fwd in unit["forwards"]:
            lines.append(f"  {fwd['name']:<6} {label(fwd['state']):<13} {fwd['remote']:>16} -> {fwd['local']:<16}"
                         f" open {fwd['open']} total {fwd['total']} in {human_bytes(fwd['bytes_in'])}"
                         f" out {human_bytes(fwd['bytes_out'])}")
            if fwd["error"]:
                lines.append(f"         {fwd['error']}")
        if unit["last_error"]:
            lines.append(f"  last error: {unit['last_error']}")
    return "\n".join(lines)
