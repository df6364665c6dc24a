"""Throttle: the first line, then one a period per key and reason, with the count held back."""

from __future__ import annotations

from console.core.throttle import Throttle, held_back


def test_first_then_once_a_period_with_the_count_then_a_new_reason_at_once():
    now = [0.0]
    throttle = Throttle(every=60, clock=lambda: now[0])
    assert throttle.check("ssh", "refused") == 0
    assert [throttle.check("ssh", "refused") for _ in range(5)] == [None] * 5
    assert throttle.check("http", "refused") == 0          # another key is its own
    assert throttle.check("ssh", "other reason") == 0      # a new reason is said at once
    assert throttle.check("ssh", "other reason") is None
    now[0] = 61
    assert throttle.check("ssh", "other reason") == 1      # a period later: said, with what was held back
    assert held_back(1, 60) == " (1 more time in the last 60 s)" and held_back(0, 60) == ""


def test_keys_are_bounded_oldest_forgotten():
    throttle = Throttle(every=60, max_keys=3, clock=lambda: 0.0)
    for key in range(10):
        throttle.check(key, "x")
    assert throttle.check(9, "x") is None   # still remembered
    assert throttle.check(0, "x") == 0      # forgotten long ago: said again
    assert len(throttle._said) == 3
