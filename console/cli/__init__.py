"""`sop-console`: the command line. Thin clients of the daemon's control socket, plus the few commands that
work on files alone (check, key show, key install, log).

Each module here declares its own subcommands and their handlers (`register(commands)`): units, log, keys,
clients (and hub), endpoints, proxy (and gateway), demo (and console). This one builds the parser and turns failures into exit codes:
0 ok, 1 operation failed, 2 usage or configuration error, 3 daemon not running. Started by sshd's ForceCommand with
no command of its own, it runs the client's SSH_ORIGINAL_COMMAND only when `ssh_command` allows it.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Sequence

from console import __version__
from console.cli import clients, demo, endpoints, keys, log, ops, proxy, ssh_command, units
from console.cli.context import Commands, Context
from console.core.errors import EXIT_FAILED, EXIT_USAGE, ConfigError, ConsoleError

MODULES = (units, log, ops, keys, clients, endpoints, proxy, demo)  # in the order --help lists their commands

EPILOG = """\
commands that need the daemon: start, stop, restart, status, trust (exit 3 when it is not running)
commands that work without it: check, key show, key install, log, daemon, demo, hub key
ops list, ops show: through the daemon when it runs, else from the state dir's oplog.sqlite; ops export: the file
clients, endpoints, proxy, gateway: through the daemon when it runs (at once), else on the state dir's store

examples:
  sop-console check                      validate the configuration
  sop-console daemon                     run the tunnels (foreground; systemd-friendly)
  sop-console key show master            print master's public key and fingerprint
  sop-console key install master         put master's key on its server (asks the password once)
  sop-console status --json              units and forwards, machine-readable
  sop-console endpoints list             the SSH servers units go through, their state and who uses them
  sop-console proxy add --ingress tcp:443:10.10.100.152:8443
                                         listen on 443 here, deliver to 10.10.100.152:8443 (kept across restarts)
  sop-console proxy list                 every rule, its listener, destinations, state and counters
  sop-console log -n 50 --follow         the tunnel log
  sop-console ops list --since -7d       the operation log: who did what, from where, this week
  sop-console demo                       a loopback hub, demo services and both units, in the console
  sop-console                            the console: menu, units, ports, log (needs a terminal)
"""


def dashed_dates(argv: list[str]) -> list[str]:
    """`--since -7d` as `--since=-7d`: argparse takes a value that starts with '-' for an option of its own."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] in ("--since", "--until") and re.fullmatch(r"-\d+[smhdw]", arg):
            out[-1] = f"{out[-1]}={arg}"
        else:
            out.append(arg)
    return out


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", metavar="PATH", default=argparse.SUPPRESS,
                        help="config file (default: $SOP_CONSOLE_CONFIG, else $XDG_CONFIG_HOME/sop-console/console.yaml)")
    common.add_argument("--state-dir", metavar="DIR", default=argparse.SUPPRESS,
                        help="keys, known_hosts, store, log, control socket "
                             "(default: $SOP_CONSOLE_STATE, else $XDG_STATE_HOME/sop-console)")
    common.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="more logging")

    top = argparse.ArgumentParser(
        prog="sop-console", parents=[common], epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Keep appliance units reachable over reverse SSH tunnels, and run them.")
    top.add_argument("--version", action="version", version=f"sop-console {__version__}")
    commands = Commands(top.add_subparsers(dest="command", metavar="COMMAND"), common)
    for module in MODULES:
        module.register(commands)
    top.set_defaults(handler=demo.console)  # no command: the console
    return top


def main(argv: Sequence[str] | None = None) -> int:
    argv = dashed_dates(list(sys.argv[1:] if argv is None else argv))
    top = parser()
    args = top.parse_args(argv)
    if args.command is None:  # maybe sshd's ForceCommand, with what the client asked for (console/cli/ssh_command.py)
        try:
            asked = ssh_command.original_command(argv, os.environ)
        except ssh_command.Refused as exc:
            print(f"sop-console: {exc}", file=sys.stderr)
            return EXIT_USAGE
        if asked is not None:
            args = top.parse_args(asked)
    ctx = Context(args)
    try:
        return args.handler(ctx)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return exc.exit_code
    except ConsoleError as exc:
        print(f"sop-console: {exc.message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # `sop-console proxy list | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error when Python flushes
        return EXIT_FAILED
    except Exception as exc:  # never a traceback for an operator; -v shows one
        if getattr(args, "verbose", False):
            raise
        print(f"sop-console: internal error: {type(exc).__name__}: {exc} (run with -v for details)", file=sys.stderr)
        return EXIT_FAILED
