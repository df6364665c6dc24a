"""The typed status records: one JSON form, byte-compatible with the documented `status --json`."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from console.core.states import GLYPHS, ForwardState, UnitState
from console.core.status import ClientForwardStatus, ClientStatus, ForwardStatus, Status, UnitStatus

README = Path(__file__).parents[2] / "README.md"


def _readme_example() -> str:
    section = README.read_text().split("### `status --json`", 1)[1]
    return re.search(r"```json\n(.*?)```", section, re.S).group(1)


def test_readme_status_example_round_trips_byte_for_byte():
    text = _readme_example()
    status = Status.from_json(json.loads(text))
    assert status.units[0].state is UnitState.UP
    assert status.units[0].forwards[0].state is ForwardState.LISTENING
    assert (status.units[0].endpoint, status.units[0].endpoint_problem) == ("default", None)  # last, after forwards
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


def test_to_json_is_what_dataclasses_asdict_gives_without_sharing_lists():
    """to_json skips asdict's deepcopy of every leaf (it cost ~90 ms of the daemon's loop per `clients list` of
    500 clients x 20 forwards): the same dict, and lists of its own, so a caller changing the answer changes no
    record."""
    forward = ForwardStatus("ssh", "127.0.0.1:2200", "127.0.0.1:22", ForwardState.LISTENING, None, 1, 2, 3, 4)
    status = Status([UnitStatus("master", UnitState.UP, "2026-11-22T10:00:00Z", "h:22", "u", "boom", None, None,
                                [forward])], ["store recovered"])
    client = ClientStatus("acme", 2, True, [2200, 2201], "2200-2201", True,
                          [ClientForwardStatus(2200, "127.0.0.1", "ssh", None, 1, 2, 3, 4, "127.0.0.1:5000")],
                          "SHA256:x", "2026-11-22T10:00:00Z", None)
    for record in (status, client, forward):
        assert record.to_json() == dataclasses.asdict(record)
        assert json.dumps(record.to_json()) == json.dumps(dataclasses.asdict(record))
    as_json = client.to_json()
    as_json["ports"].append(9999)
    as_json["forwards"][0]["port"] = 1
    assert client.ports == [2200, 2201] and client.forwards[0].port == 2200
    assert status.to_json()["units"][0]["state"] is UnitState.UP  # the enum member, as asdict leaves it


def test_an_endpoint_check_folds_into_the_status_of_the_units_that_use_it():
    from console.core.events import EndpointChanged

    status = Status.from_json(json.loads(_readme_example()))
    problem = "unavailable: connection refused by 203.0.113.7:2222"
    assert not status.apply(EndpointChanged("hall-b", "checked", problem))   # not master's endpoint
    assert status.units[0].endpoint_problem is None
    assert status.apply(EndpointChanged("default", "checked", problem))
    assert status.units[0].endpoint_problem == problem
    assert f"  endpoint default: {problem}" in status.render().splitlines()
    assert not status.apply(EndpointChanged("default", "scope", problem))   # nothing new to show
    assert status.apply(EndpointChanged("default", "checked", None)) and status.units[0].endpoint_problem is None
    assert "endpoint default" not in status.render()
