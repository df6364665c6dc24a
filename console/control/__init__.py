"""The control API: the daemon serves it on a Unix socket (0600), the CLI and the console are its clients.

Protocol: JSON, one object per line. Request ``{"id": 1, "op": "status", "args": {...}}``; answer
``{"id": 1, "ok": true, "result": ...}`` or ``{"id": 1, "ok": false, "error": "...", "code": 1}``.
``{"op": "subscribe"}`` turns the connection into a stream of ``{"event": "UnitStateChanged", ...}``
lines, after a first answer carrying the current status.

The operations and their parameters are declared once, in console/control/operations.py; a request that does
not fit gets an answer with code 2 and one line naming the field.
"""
