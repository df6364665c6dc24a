"""console/hub/compat.py's per-connection RFC 4253 kex-guess rule, without a network (the Dropbear client itself:
tests/integration/test_hub_peers.py)."""

from __future__ import annotations

import asyncssh
from asyncssh.constants import MSG_KEXINIT

from console.hub.compat import use_rfc_kex_guess


class _Conn(asyncssh.SSHServerConnection):
    pass


def _conn() -> _Conn:
    conn = _Conn.__new__(_Conn)  # only what use_rfc_kex_guess looks at; __init__ needs a loop and options
    conn._ignore_first_kex, conn._client_kexinit, conn._server_kexinit = False, b"", b""
    return conn


def test_connections_of_one_class_share_one_patched_table_and_the_class_keeps_its_own():
    a, b = _conn(), _conn()
    assert use_rfc_kex_guess(a) and use_rfc_kex_guess(b)
    # one table per class, not a copy per connection (that copy cost the hub ~0.8 KiB a client)
    assert a._packet_handlers is b._packet_handlers
    original = _Conn._packet_handlers[MSG_KEXINIT]
    assert a._packet_handlers[MSG_KEXINIT] is not original
    assert {k: v for k, v in a._packet_handlers.items() if k != MSG_KEXINIT} == \
        {k: v for k, v in _Conn._packet_handlers.items() if k != MSG_KEXINIT}
    assert _Conn._packet_handlers is asyncssh.SSHServerConnection._packet_handlers  # asyncssh's, untouched
