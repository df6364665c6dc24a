"""Counts in words: "1 forward", "2 forwards" (never "forward(s)")."""

from __future__ import annotations


def noun(n: int, word: str, plural: str | None = None) -> str:
    """The word for n of it: `noun(1, "port")` -> "port", `noun(2, "port")` -> "ports"."""
    return word if n == 1 else (plural or word + "s")


def counted(n: int, word: str, plural: str | None = None) -> str:
    """`counted(1, "forward")` -> "1 forward", `counted(0, "forward")` -> "0 forwards"."""
    return f"{n} {noun(n, word, plural)}"
