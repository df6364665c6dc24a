"""Run one unit with the engine as `sop-console daemon` does, with settings changed from the command line for
bench/throughput.py to compare: the relay's window and packet size, malloc's thresholds, asyncssh's per-packet
MSG_IGNORE kept, the slices asyncssh reads, asyncio's read size, asyncssh's per-packet debug line, the event loop.
Not an operator tool."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from console import relay  # noqa: E402
from console.core import malloc, ssh_tuning  # noqa: E402
from console.core.config import load_config  # noqa: E402
from console.core.paths import StatePaths  # noqa: E402
from console.daemon import Daemon  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--window", type=int, default=relay.WINDOW)
    parser.add_argument("--packet", type=int, default=relay.MAX_PACKET)
    parser.add_argument("--malloc", default="shipped",
                        help="shipped (as the daemon does), glibc (its defaults), or MMAP:TRIM thresholds in bytes")
    parser.add_argument("--keep-ignore", action="store_true",
                        help="send asyncssh's empty MSG_IGNORE before every packet under AEAD ciphers too")
    parser.add_argument("--uvloop", action="store_true")
    parser.add_argument("--in-slice", type=int, default=ssh_tuning.IN_SLICE,
                        help="the most asyncssh is given to read at a time (0: what arrives, in one piece)")
    parser.add_argument("--read-size", type=int, default=ssh_tuning.READ_SIZE,
                        help="the most asyncio reads from a socket at once (0: asyncio's own, 256 KiB)")
    parser.add_argument("--packet-log", action="store_true",
                        help="format asyncssh's per-packet debug line whatever the debug level, as asyncssh does")
    args = parser.parse_args()
    if args.read_size:
        ssh_tuning.READ_SIZE = args.read_size
    else:
        ssh_tuning.read_more_at_once = lambda transport: False
    if args.packet_log:
        ssh_tuning.quiet_packet_log = lambda handler: False
    if args.malloc == "shipped":
        malloc.keep_large_buffers()
    elif args.malloc != "glibc":
        mmap_threshold, trim_threshold = (int(value) for value in args.malloc.split(":"))
        malloc.keep_large_buffers(mmap_threshold, trim_threshold)
    if args.keep_ignore:
        ssh_tuning.skip_empty_ignore_under_aead = lambda conn: False
    if args.in_slice:
        ssh_tuning.IN_SLICE = args.in_slice
    else:
        ssh_tuning.read_in_slices = lambda conn: False
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
