"""One end of bench/udp_hub.py in a process of its own, as in a real deployment: `hub` runs the daemon's engine with
a hub section; `unit` runs the engine with the unit `master` logged in to that hub, plus a UDP egress rule and a
UDP ingress rule through it. Prints `ready ...` when it carries; on stdin's end prints its counters and exits.
Not an operator tool."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from console.core.config import parse_config  # noqa: E402
from console.core.paths import StatePaths  # noqa: E402
from console.engine import Engine  # noqa: E402
from console.tunnel import egress, ingress  # noqa: E402


async def _until_stdin_closes() -> None:
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("role", choices=["hub", "unit"])
    parser.add_argument("--config", required=True)
    parser.add_argument("--state", required=True)
    parser.add_argument("--egress-to", type=int, help="unit: the sink port the egress rule sends to")
    parser.add_argument("--ingress-port", type=int, help="unit: the hub's UDP port of the ingress rule")
    parser.add_argument("--ingress-to", type=int, help="unit: the sink port the ingress rule delivers to")
    parser.add_argument("--echo-to", type=int, help="unit: the echo port a second egress rule sends to")
    parser.add_argument("--uvloop", action="store_true")
    args = parser.parse_args()
    if args.uvloop:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    cfg = parse_config(Path(args.config).read_text(), args.config)
    engine = Engine(cfg, StatePaths(Path(args.state)))
    await engine.start()
    try:
        if args.role == "hub":
            print(f"ready {engine.hub.port}", flush=True)
            await _until_stdin_closes()
            flows = engine.hub.egress_flows.get("acme")
            ports = list(engine.hub.udp_ports.values())
            print(json.dumps({"egress_dropped": flows.stats.dropped if flows else None,
                              "egress_flows": flows.stats.total if flows else None,
                              "ingress_dropped": ports[0].stats.dropped if ports else None}), flush=True)
            return
        worker = engine.workers["master"]
        while worker.state != "up":
            await asyncio.sleep(0.05)
        rule = await egress.UdpEgress(worker, "127.0.0.1", args.egress_to, idle_timeout=60).start("127.0.0.1", 0)
        echo = await egress.UdpEgress(worker, "127.0.0.1", args.echo_to, idle_timeout=60).start("127.0.0.1", 0)
        fr = await ingress.add_udp(worker, args.ingress_port, "127.0.0.1", args.ingress_to)
        while fr.state != "listening":
            await asyncio.sleep(0.05)
        print(f"ready {rule.port} {echo.port}", flush=True)
        await _until_stdin_closes()
        print(json.dumps({"egress_dropped": rule.stats.dropped, "egress_in": rule.stats.datagrams_in,
                          "ingress_dropped": fr.udp.stats.dropped, "ingress_out": fr.udp.stats.datagrams_in,
                          "echo_dropped": echo.stats.dropped, "echo_flows": echo.stats.total}),
              flush=True)
    finally:
        await engine.shutdown()


if __name__ == "__main__":
    asyncio.run(main())
