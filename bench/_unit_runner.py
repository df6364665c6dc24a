"""Run one unit with the engine, with the relay's window and packet size and the event loop set from the
command line (bench/throughput.py compares them). Not an operator tool."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from console.core.config import load_config  # noqa: E402
from console.core.paths import StatePaths  # noqa: E402
from console.daemon import Daemon  # noqa: E402
from console import relay  # noqa: E402


def _drop_ignore_packets() -> None:
    """Measure what asyncssh's per-packet MSG_IGNORE costs. Never used by the product: it patches asyncssh
    internals, and the decision to ask upstream for an option belongs in an issue."""
    from asyncssh.connection import SSHConnection
    from asyncssh.constants import MSG_IGNORE

    original = SSHConnection.send_packet
    empty = b"\x00\x00\x00\x00"

    def send_packet(self, pkttype, *args, handler=None):
        if pkttype == MSG_IGNORE and args == (empty,):
            return None
        return original(self, pkttype, *args, handler=handler)

    SSHConnection.send_packet = send_packet


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--window", type=int, default=relay.WINDOW)
    parser.add_argument("--packet", type=int, default=relay.MAX_PACKET)
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--no-ignore-packets", action="store_true",
                        help="EXPERIMENT ONLY: drop the empty MSG_IGNORE asyncssh sends before every packet")
    args = parser.parse_args()
    if args.no_ignore_packets:
        _drop_ignore_packets()
    relay.WINDOW, relay.MAX_PACKET = args.window, args.packet
    if args.uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())

    async def run() -> None:
        daemon = Daemon(load_config(Path(args.config)), StatePaths(Path(args.state)), Path(args.config),
                        echo_log=False)
        await daemon.run()

    asyncio.run(run())


if __name__ == "__main__":
    main()
