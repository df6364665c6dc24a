"""The typed status records: one JSON form, byte-compatible with the documented `status --json`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from console.core.states import GLYPHS, ForwardState, UnitState
from console.core.status import ClientStatus, Status

README = Path(__file__).parents[2] / "README.md"


def _readme_example() -> str:
    section = README.read_text().split("### `status --json`", 1)[1]
    return re.search(r"```json\n(.*?)```", section, re.S).group(1)


def test_readme_status_example_round_trips_byte_for_byte():
    text = _readme_example()
    status = Status.from_json(json.loads(text))
    assert status.units[0].state is UnitState.UP
    assert status.units[0].forwards[0].state is ForwardState.LISTENING
    # the same keys in the same order, the same values: what scripts read does not change
    assert json.dumps(status.to_json()) == json.dumps(json.loads(text))


def test_every_state_has_a_word_and_a_glyph_in_one_table():
    for state in [*UnitState, *ForwardState]:
        assert state.glyph == GLYPHS[state.value] and state.label == f"{state.glyph} {state.value}"


@pytest.mark.parametrize("damage, message", [
    (lambda d: d["units"][0].pop("since"), "UnitStatus: since is missing"),
    (lambda d: d["units"][0].update(state="sleeping"), "UnitStatus.state: unknown state 'sleeping'"),
    (lambda d: d["units"][0].update(forwards={}), "UnitStatus.forwards: a list expected, got dict"),
    (lambda d: d["units"].append(5), "UnitStatus: an object expected, got int"),
])
def test_a_wrong_shape_is_named(damage, message):
    data = json.loads(_readme_example())
    damage(data)
    with pytest.raises(ValueError) as caught:
        Status.from_json(data)
    assert str(caught.value) == message


def test_client_record_round_trips():
    data = {"id": "acme", "quota": 2, "enabled": True, "ports": [2200, 2201], "port_ranges": "2200-2201",
            "connected": True, "forwards": [{"port": 2200, "bind": "127.0.0.1", "name": "ssh",
                                             "destination": "127.0.0.1:22", "open": 1, "total": 2,
                                             "bytes_in": 3, "bytes_out": 4, "session": "127.0.0.1:5000"}],
            "fingerprint": "SHA256:x", "created": "2026-11-22T10:00:00Z", "last_seen": None}
    client = ClientStatus.from_json(data)
    assert client.forwards[0].counters() == "open 1 total 2 in 3 B out 4 B"
    assert json.dumps(client.to_json()) == json.dumps(data)
