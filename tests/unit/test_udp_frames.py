"""The UDP-over-SSH wire (console.core.udp_frames) and the hub's egress list (console.core.egress_allow), read
without a network: frames split anywhere, bounds, the destination header, allow-list entries and config lines."""

from __future__ import annotations

import os

import pytest

from console.core.config import parse_config
from console.core.egress_allow import EgressAllow, parse_entry
from console.core.errors import ConfigError
from console.core.udp_frames import MAX_PAYLOAD, Deframer, encode_dest, frame, parse_dest


def test_frames_come_back_whole_however_the_stream_is_cut():
    payloads = [b"", b"a", os.urandom(512), os.urandom(MAX_PAYLOAD), b"last"]
    stream = b"".join(frame(p) for p in payloads)
    for step in (1, 2, 3, 700, 65536, len(stream)):
        deframer, got = Deframer(), []
        for at in range(0, len(stream), step):
            got += deframer.feed(stream[at:at + step])
        assert got == payloads, step
        assert not deframer._buffer  # nothing left over


def test_a_frame_over_the_largest_datagram_is_refused_both_ways():
    with pytest.raises(ValueError):
        frame(bytes(MAX_PAYLOAD + 1))
    with pytest.raises(ValueError, match="a frame of 65535 bytes"):
        Deframer().feed(b"\xff\xff" + bytes(10))


def test_the_destination_header():
    assert parse_dest(encode_dest("10.0.6.9", 53)) == ("10.0.6.9", 53)
    assert parse_dest(encode_dest("fd00::1", 443)) == ("fd00::1", 443)
    assert parse_dest(encode_dest("dns.example.com", 53)) == ("dns.example.com", 53)
    for bad in (b"not json", b'{"v": 2, "dest": "a:1"}', b'{"v": 1, "dest": "a b:1"}', b'{"v": 1, "dest": "a:0"}',
                b'{"v": 1, "dest": "a:70000"}', b'{"v": 1}', bytes(2000), "é".encode()):
        with pytest.raises(ValueError):
            parse_dest(bad)


def test_egress_allow_entries_and_matching():
    allow = EgressAllow(["10.0.5.7:80", "10.0.6.0/24:53", "[fd00::1]:443", "DB.example.com:5432",
                         "127.0.0.1:7000-7010"])
    assert allow.allows_address("10.0.5.7", 80) and not allow.allows_address("10.0.5.7", 81)
    assert allow.allows_address("10.0.6.200", 53) and not allow.allows_address("10.0.7.1", 53)
    assert allow.allows_address("fd00::1", 443) and allow.allows_address("::ffff:10.0.5.7", 80)
    assert allow.allows_address("127.0.0.1", 7005) and not allow.allows_address("127.0.0.1", 7011)
    assert allow.allows_name("db.example.com", 5432) and not allow.allows_address("db.example.com", 5432)
    assert not EgressAllow() and EgressAllow().refusal("10.0.0.1:22") == (
        "egress to 10.0.0.1:22 is not allowed by the hub (hub.egress_allow: none allowed)")
    for bad, why in (("10.0.0.0/24", "must be HOST:PORT"), ("10.0.0.1/24:22", "not a network"),
                     ("1.2.3.4:0", "port must be 1-65535"), ("1.2.3.4:9-2", "port must be 1-65535"), (22, "must be")):
        with pytest.raises(ValueError, match=why):
            parse_entry(bad)


def test_hub_egress_allow_in_config():
    cfg = parse_config("hub:\n  egress_allow: [10.0.5.7:80, '10.0.6.0/24:53']\n", "c.yaml")
    assert cfg.hub.egress_allow == ("10.0.5.7:80", "10.0.6.0/24:53")
    assert parse_config("hub: {}\n", "c.yaml").hub.egress_allow == ()
    with pytest.raises(ConfigError) as failed:
        parse_config("hub:\n  egress_allow:\n    - 10.0.5.7:80\n    - 10.0.6.1/24:53\n", "c.yaml")
    assert failed.value.problems == ["c.yaml:4: hub.egress_allow[1]: '10.0.6.1/24:53': not a network or address "
                                     "(10.0.6.1/24 has host bits set)"]
