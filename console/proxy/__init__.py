"""The proxy rules at run time: listeners on this machine (`via local`, and egress through a unit), round robin
over the destinations of each listener, TCP relayed socket to socket, UDP flows per source address with an idle
timeout, and the rules via a unit handed to a Carrier (console/core/rules.py) when the engine has one.

May import console.relay and console.core, not the tunnel, the hub or the UI (pyproject's import-linter layers).
"""
