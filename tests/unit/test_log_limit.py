"""LogLimiter: the first line of a key, then a summary a window; bounded; settled when the trouble ends."""

from __future__ import annotations

from console.core.log_limit import LogLimiter


def test_the_log_limiter_bounds_what_it_remembers():
    """Many peers (a flood from many addresses) share one key per reason beyond max_keys; a key quiet for a
    window is forgotten, so its next line is said again."""
    said: list[str] = []
    now = [0.0]
    quiet = LogLimiter(said.append, window=60, max_keys=3, clock=lambda: now[0])
    for i in range(10):
        quiet((f"10.0.0.{i}", "a connection"), f"refused a connection from 10.0.0.{i}", f"refused from 10.0.0.{i}")
    assert said == [f"refused a connection from 10.0.0.{i}" for i in range(4)]  # 3 keys, then the shared one
    now[0] = 61
    quiet.tick()
    assert said[4:] == ["refused from 10.0.0.9 (and others like it): 6 more in the last 61 s"]
    now[0] = 122
    quiet.tick()  # nothing more came: forgotten
    quiet(("10.0.0.0", "a connection"), "refused a connection from 10.0.0.0", "x")
    assert said[-1] == "refused a connection from 10.0.0.0"


def test_settle_says_what_was_held_back_and_forgets():
    said: list[str] = []
    now = [0.0]
    quiet = LogLimiter(said.append, window=60, clock=lambda: now[0])
    for _ in range(4):
        quiet(("ssh", "refused: in use"), "forward ssh refused: in use", "forward ssh refused again")
    quiet(("http", "refused: in use"), "forward http refused: in use", "forward http refused again")
    now[0] = 3
    quiet.settle("ssh")  # ssh listens again
    assert said == ["forward ssh refused: in use", "forward http refused: in use",
                    "forward ssh refused again: 3 more in the last 3 s"]
    quiet(("ssh", "refused: in use"), "forward ssh refused: in use", "forward ssh refused again")
    assert said[-1] == "forward ssh refused: in use"  # a new incident is said at once
