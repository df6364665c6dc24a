"""What the console knows and asks, without Textual: the status mirror, the selected unit, the configuration and
every request to the daemon. Screens call the Session; the App turns what it yields into messages.

Status is the typed record of console/core/status.py, folded forward by the engine's events."""

from __future__ import annotations

import asyncio
import getpass
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from console.core.errors import EXIT_USAGE, ConsoleError, DaemonNotRunning, OperationFailed
from console.core.events import (ClientChanged, EndpointChanged, Event, OperationRecorded, Reloaded, ReloadRefused,
                                 RuleChanged)
from console.core.paths import StatePaths
from console.core.status import (ClientStatus, EndpointCheck, EndpointStatus, GatewayStatus, OpEntry, RuleStatus,
                                 SshdCheck, Status, UnitStatus)
from console.ui.backend import DaemonBackend, StaticBackend

if TYPE_CHECKING:  # the schema and its YAML load when a config is read, not at start
    from console.core.config import Config

Backend = DaemonBackend | StaticBackend
DAEMON = "daemon"
ENGINE_HERE = "engine here"

# What `q` does, in each mode: the line above the keys on the main screen.
QUIT_NOTE = "q quits the console; the tunnels keep running"
QUIT_NOTE_ENGINE_HERE = "q quits the console and the engine it runs: the tunnels end"
QUIT_NOTE_DEMO = "q ends the demo: its hub, services and tunnels stop"


@dataclass(frozen=True)
class Outcome:
    """What an operation came to, in words, and how loudly to say it ("information", "warning", "error")."""

    text: str
    severity: str = "information"


@dataclass(frozen=True)
class KeyOffer:
    """What the Install ssh key dialog shows before anything is sent."""

    unit: str
    key_line: str
    fingerprint: str
    target: str


class Session:
    def __init__(self, paths: StatePaths, *, config: Config | None = None, config_path: Path | None = None,
                 backend: Backend | None = None, demo: bool = False, config_problems: list[str] | None = None) -> None:
        self.paths = paths
        # The config file did not check when the console opened (one `FILE:LINE: ...` each): the console opens all
        # the same, says so, and Configure offers the file's text. Emptied once a good file is saved or read.
        self.config_problems: list[str] = list(config_problems or [])
        self.demo = demo  # the demo's console: its daemon, hub and services live in this process and end with it
        self.config = config
        self.config_path = config_path
        self.backend: Backend = backend or DaemonBackend(paths.control_socket)
        self.status = Status()
        self.selected_unit: str | None = None
        self.engine_here = None  # a Daemon run inside the console when no daemon was running
        self.stale_since: float | None = None  # while the daemon is gone: when the status was last live (epoch)
        self.ran: str | None = None  # what this console was attached to: DAEMON, ENGINE_HERE, or None (nothing)
        self.clock = time.time  # what "now" is for the ages screens show (a snapshot fixes it)

    # ------------------------------------------------------------------ the daemon, and the status mirror

    async def connect(self) -> None:
        """Attach to the daemon (DaemonNotRunning when there is none) and take its status."""
        self._take(await self.backend.connect())
        self.ran = ENGINE_HERE if self.engine_here is not None else DAEMON

    def lost(self) -> None:
        """The daemon went away: what the mirror holds is now the last state known, as of this moment."""
        if self.stale_since is None:
            self.stale_since = time.time()

    def as_of(self) -> str:
        """When the stale status was last live, HH:MM:SS local time ("" while live)."""
        return time.strftime("%H:%M:%S", time.localtime(self.stale_since)) if self.stale_since is not None else ""

    async def reconnect(self) -> None:
        """Attach again to the daemon on the same socket: fresh connections, a fresh status, the event stream
        followed again. DaemonNotRunning (or OSError) while none answers; the old connections stay until then."""
        if not isinstance(self.backend, DaemonBackend):
            raise DaemonNotRunning("no daemon to reconnect to")
        fresh = DaemonBackend(self.backend.socket_path)
        try:
            status = await fresh.connect()
        except BaseException:
            await fresh.close()
            raise
        old, self.backend = self.backend, fresh
        try:
            await old.close()
        except (OSError, ConsoleError):
            pass  # the connections of a daemon that is gone
        self._take(status)
        self.stale_since = None

    async def start_engine_here(self) -> None:
        """Run the engine inside this process (its tunnels end with it) and attach to it. The config file is
        read again each time (a retry after it was put right). On failure (ConsoleError, OSError) nothing is
        left running: the engine is shut down, the state dir's lock released."""
        from console.daemon import Daemon

        if self.config_path is not None:
            self.config = None
        config = self.load_config()
        if config is None:
            raise ConsoleError("no configuration to start the engine with (pass --config)")
        self.config_problems = []  # the file checks
        daemon = Daemon(config, self.paths, self.config_path, echo_log=False)
        try:
            await daemon.start()
        except BaseException:
            try:
                await daemon.close()
            except Exception:  # noqa: BLE001 - an engine that half started: what matters is the first failure
                daemon.lock.release()
            raise
        self.engine_here = daemon
        self.backend = DaemonBackend(self.paths.control_socket)
        await self.connect()

    def closing_line(self) -> str:
        """What the console says as it closes, true to what ran: a daemon (still there or gone), the engine run
        here (stopped with the console), the demo (ended with it), or nothing."""
        if self.demo:
            return "demo closed; its hub, services and tunnels have stopped"
        if self.ran == ENGINE_HERE:
            return "console closed; the engine it ran has stopped, and its tunnels with it"
        if self.ran == DAEMON and self.stale_since is not None:
            return f"console closed; the daemon had gone away (last seen at {self.as_of()}) and was not back"
        if self.ran == DAEMON:
            return "console closed; the tunnels keep running in the daemon"
        return "console closed; no daemon was running and no engine ran here"

    def quit_note(self) -> str:
        """What `q` does here, said above the keys: the daemon's tunnels stay; the engine here and the demo end."""
        if self.demo:
            return QUIT_NOTE_DEMO
        return QUIT_NOTE_ENGINE_HERE if self.engine_here is not None else QUIT_NOTE

    async def changes(self) -> AsyncIterator[Event]:
        """The engine's events, folded into the status mirror; yields those that change what a screen shows:
        Reloaded (after a fresh snapshot was taken), ReloadRefused (the config file's problems, now
        `config_problems`), a unit's or forward's change, ClientChanged, EndpointChanged, OperationRecorded and
        RuleChanged."""
        async for event in self.backend.events():
            if isinstance(event, Reloaded):  # units or forwards may have changed: take a fresh snapshot
                self._take(await self.backend.request("status"))
                if self.config_problems:  # the file was put right: the daemon read a good one
                    await self.check_config_file()
                yield event
            elif isinstance(event, ReloadRefused):  # the daemon read the file and it does not check
                self.config_problems = list(event.problems)
                yield event
            elif isinstance(event, EndpointChanged):
                self.status.apply(event)  # the units going through it may say its problem
                yield event
            elif isinstance(event, (ClientChanged, OperationRecorded, RuleChanged)) or self.status.apply(event):
                yield event

    def _take(self, status: dict) -> None:
        self.status = Status.from_json(status)
        names = self.unit_names()
        if self.selected_unit not in names:
            self.selected_unit = names[0] if names else None

    def units(self) -> list[UnitStatus]:
        return self.status.units

    def unit_names(self) -> list[str]:
        return [u.name for u in self.units()]

    def unit_status(self, name: str | None) -> UnitStatus | None:
        return self.status.unit(name)

    def select_unit(self, name: str | None) -> bool:
        """True if the selection changed."""
        if name == self.selected_unit or name not in self.unit_names():
            return False
        self.selected_unit = name
        return True

    def next_unit(self) -> None:
        names = self.unit_names()
        if names:
            current = self.selected_unit
            self.selected_unit = names[(names.index(current) + 1) % len(names)] if current in names else names[0]

    async def request(self, op: str, **args: Any) -> Any:
        """One request to the daemon; while it is gone, DaemonNotRunning at once, saying the console reconnects."""
        if self.stale_since is not None:
            raise DaemonNotRunning(f"the daemon is gone; the console is reconnecting (what it shows is as of "
                                   f"{self.as_of()})")
        return await self.backend.request(op, **args)

    async def close(self) -> None:
        await self.backend.close()
        if self.engine_here is not None:
            await self.engine_here.close()
            self.engine_here = None

    # ------------------------------------------------------------------ units

    async def start_unit(self, unit: str) -> None:
        await self.request("start", unit=unit)

    async def stop_unit(self, unit: str) -> None:
        await self.request("stop", unit=unit)

    async def host_key_check(self, unit: str) -> dict:
        """What the unit's server presents now, what we trust for it and its software; nothing is recorded."""
        return await self.request("trust", unit=unit, check=True)

    async def trust(self, unit: str, fingerprint: str, replace: bool) -> dict:
        """Record the server's host key: refused unless it still presents the one the operator was shown."""
        return await self.request("trust", unit=unit, fingerprint=fingerprint, replace=replace or None)

    async def key_offer(self, unit: str) -> KeyOffer:
        config = self.load_config()
        if config is None or unit not in config.units:
            raise ConsoleError(f"no configuration for unit {unit}")
        from console.core.keys import unit_public_key  # asyncssh: 0.2 s of imports the first screen does not need

        info = await asyncio.to_thread(unit_public_key, self.paths, unit)
        target = f"{config.units[unit].username}@{config.units[unit].server.address}"
        return KeyOffer(unit, info.line, info.fingerprint, target)

    async def install_key(self, unit: str, password: str) -> tuple[str, str | None]:
        """The same code path as `sop-console key install`: the outcome in words, and a warning when the daemon
        could not be told (None when it was, or when none runs)."""
        from console.tunnel.key_install import INSTALLED, install_key

        config = self.load_config()
        if config is None or unit not in config.units:
            raise ConsoleError(f"no configuration for unit {unit}")

        async def ask() -> str:
            return password

        try:
            result = await install_key(self.paths, config.units[unit], config.tunnel, ask)
        except ConsoleError as exc:   # recorded in the operation log as failed, then said as before
            target = f"{config.units[unit].username}@{config.units[unit].server.address}"
            await self.report_key_install(unit, f"key install to {target}", failed=exc.message)
            raise
        warning = await self.report_key_install(unit, result.summary)
        return (f"installed {result.key.fingerprint}" if result.outcome == INSTALLED else "already authorized"), warning

    async def report_key_install(self, unit: str, detail: str, *, failed: str | None = None) -> str | None:
        """Tell the daemon (it retries the unit at once and records it; `failed`: it records the failure), or the
        store when none runs. A warning when the daemon could not be told."""
        from console.control.client import report_key_install

        return await report_key_install(self.paths, unit, detail, getpass.getuser(), "console", self.config,
                                        failed=failed)

    # ------------------------------------------------------------------ the configuration

    def load_config(self) -> Config | None:
        """The configuration this console runs with (None without one); ConsoleError if the file is bad."""
        if self.config is None and self.config_path is not None:
            from console.core.config import load_config

            self.config = load_config(self.config_path)
        return self.config

    def cannot_save(self) -> str | None:
        """Why Configure cannot save here (the demo's configuration is in memory; no file was given), or None."""
        if self.demo:
            return "the demo's configuration is made in memory when it starts: there is no file to save it to"
        if self.config_path is None:
            return "nothing to save to: start the console with --config FILE"
        return None

    async def check_config_file(self) -> list[str]:
        """Read the config file again (in a thread): its problems now (none: it checks, and it is the configuration
        used from now on)."""
        if self.config_path is None:  # the console has no file of its own: the daemon's reload said it is good
            self.config_problems = []
            return []
        config, problems = await asyncio.to_thread(_read_config, self.config_path)
        if config is not None:
            self.config = config
        self.config_problems = problems
        return problems

    def config_text(self) -> str | None:
        """The config file's text, for Configure's editor when the form cannot read the file (None when the text
        cannot be read either: too large, not UTF-8, unreadable)."""
        if self.config_path is None:
            return None
        from console.core.config_file import read_config_text

        try:
            return read_config_text(self.config_path)
        except (ConsoleError, OSError, UnicodeDecodeError):
            return None

    def save_effect(self, *, as_typed: bool = False) -> str:
        """What saving does here, once it is possible: the file rewritten (from the form, without its comments;
        or the text as typed), the .bak, who reloads it."""
        reloads = "the engine here reloads it" if self.engine_here is not None else "the daemon reloads it"
        if self.ran is None:  # attached to nothing yet: no daemon runs (the engine here could not start)
            reloads = "no daemon runs: r starts the engine here with it"
        if as_typed:
            return f"Saving writes this text as it is (.bak kept); {reloads}."
        return f"Saving rewrites it (comments dropped, .bak kept); {reloads}."

    def save_note(self) -> str:
        """Configure's title: what it edits and what saving does, true to the mode (one line each, <= 78 columns)."""
        if self.demo:
            return ("Configure: the demo's configuration (in memory)\n"
                    "Look only: nothing is saved, and the demo ends when you quit.")
        if self.config_path is None:
            return ("Configure: no file (this console was started without one)\n"
                    "Nothing can be saved: start the console with --config FILE.")
        return f"Configure: {self.config_path}\n{self.save_effect()}"

    def configuration_form(self, *, blank: bool = False):
        """The Configure form filled from the configuration (empty without one, or when `blank`)."""
        from console.core.config_form import form_from_config

        return form_from_config(None if blank else self.load_config())

    async def save_configuration(self, form) -> Outcome:
        """Check as `check` does, write atomically (previous file kept as .bak), ask the daemon to reload.
        ConsoleError (ConfigError with `problems`) when the form does not check: nothing was written."""
        from console.core.config_form import save_form

        return await self._save(save_form, form)

    async def save_config_text(self, text: str) -> Outcome:
        """The file's own text from Configure's editor: checked as `check` does (ConfigError with one
        `FILE:LINE: ...` per problem: nothing written), written atomically (.bak kept), the daemon asked to reload."""
        from console.core.config_form import save_text

        return await self._save(save_text, text)

    async def _save(self, write, what) -> Outcome:
        """`write(path, what)` in a thread (it checks, then writes atomically), then the daemon reloads."""
        why_not = self.cannot_save()
        if why_not is not None:
            raise ConsoleError(why_not)
        self.config = await asyncio.to_thread(write, self.config_path, what)
        self.config_problems = []
        return await self._reload_saved()

    async def _reload_saved(self) -> Outcome:
        if self.ran is None:
            return Outcome(f"saved {self.config_path} (previous kept as .bak); no daemon runs to reload it")
        try:
            changes = await self.request("reload")
        except ConsoleError as exc:
            return Outcome(f"saved {self.config_path}, but the daemon did not reload: {exc.message}", "warning")
        summary = "; ".join(changes) if changes else "nothing changed"
        return Outcome(f"saved {self.config_path} (previous kept as .bak); daemon reloaded: {summary}")

    # ------------------------------------------------------------------ the hub's clients
    # Every request about clients is here, in one place.

    async def clients_list(self, client_id: str | None = None) -> list[ClientStatus]:
        """All clients, or the one named (an empty list when it no longer exists)."""
        if client_id is None:
            result = await self.request("clients.list")
        else:
            try:
                result = await self.request("clients.list", id=client_id)
            except ConsoleError as exc:
                if exc.exit_code != EXIT_USAGE:  # a usage error here: no such client (removed)
                    raise
                return []
        return [ClientStatus.from_json(c) for c in result.get("clients", [])] if isinstance(result, dict) else []

    async def clients_add(self, client_id: str) -> dict:
        """Register a client; the answer holds its private key (once) when the hub made the pair."""
        result = await self.request("clients.add", id=client_id)
        return result if isinstance(result, dict) else {}

    async def clients_change(self, client_id: str, quota: int) -> None:
        await self.request("clients.change", id=client_id, quota=quota)

    async def clients_remove(self, client_id: str) -> None:
        await self.request("clients.remove", id=client_id)

    # ------------------------------------------------------------------ endpoints
    # Every request about endpoints is here, in one place.

    async def endpoints_list(self) -> list[EndpointStatus]:
        result = await self.request("endpoints.list")
        return [EndpointStatus.from_json(e) for e in result.get("endpoints", [])] if isinstance(result, dict) else []

    async def endpoints_check(self, names: list[str]) -> list[EndpointCheck]:
        """Check now whether units can log in to these endpoints; the daemon keeps each result."""
        result = await self.request("endpoints.check", names=names)
        return [EndpointCheck.from_json(c) for c in result.get("checks", [])] if isinstance(result, dict) else []

    async def endpoints_remove(self, names: list[str]) -> list[str]:
        """Remove runtime endpoints, all or none (ConsoleError naming each refused one and why)."""
        return list(await self.request("endpoints.remove", names=names) or [])

    async def endpoint_scope(self, verb: str, name: str, vpcs: list[str], subnets: list[str]) -> dict:
        """`associate` or `unassociate` VPCs and subnets: the daemon's answer (what was done, what was not)."""
        if verb not in ("associate", "unassociate"):
            raise ValueError(verb)
        result = await self.request(f"endpoints.{verb}", name=name, vpcs=vpcs or None, subnets=subnets or None)
        return result if isinstance(result, dict) else {}

    async def endpoint_setup_auth(self, name: str, method: str, *, password: str | None = None,
                                  identity: str | None = None, login_user: str | None = None,
                                  unit: str | None = None, trust_fingerprint: str | None = None
                                  ) -> tuple[str, EndpointCheck | None]:
        """Set up auth by key or password (the daemon does it, then checks): what it did, and the new check.
        An identity file is named as the operator typed it: made absolute here (~ is the operator's home)."""
        if identity:
            identity = str(Path(identity).expanduser().absolute())
        result = await self.request("endpoints.setup_auth", name=name, method=method, password=password,
                                    identity=identity, login_user=login_user, unit=unit,
                                    trust_fingerprint=trust_fingerprint)
        check = result.get("check") if isinstance(result, dict) else None
        return (str(result.get("outcome", "")) if isinstance(result, dict) else "",
                EndpointCheck.from_json(check) if check else None)

    async def endpoint_setup_script(self, name: str, unit: str | None = None) -> str:
        """The script an operator runs on the endpoint as root (set-up by script)."""
        result = await self.request("endpoints.setup_script", name=name, unit=unit)
        return str(result.get("script", "")) if isinstance(result, dict) else ""

    async def endpoint_check_sshd(self, name: str, *, fix: bool = False) -> SshdCheck:
        """The endpoint's sshd settings judged against what its forwards need; `fix` changes them (with root or
        password-less sudo there), then checks again."""
        result = await self.request("endpoints.check_sshd", name=name, fix=fix or None)
        try:
            return SshdCheck.from_json(result)
        except ValueError as exc:
            raise OperationFailed(f"the daemon's sshd check of {name} could not be read: {exc}") from None

    # ------------------------------------------------------------------ the operation log

    async def ops_page(self, since: str | None = None, until: str | None = None, before: int | None = None,
                       after: int | None = None, limit: int = 20) -> tuple[list[OpEntry], int | None, bool]:
        """A page of the operation log, newest first (`since`/`until`: UTC text, console/core/dates.utc_text):
        the entries, the id to page on from (None: no more), and, asked `after` an entry, whether more arrived
        than `limit` (then the page shown is not the newest any more: fetch it again)."""
        result = await self.request("ops.list", since=since, until=until, before=before, after=after, limit=limit)
        if not isinstance(result, dict):
            return [], None, False
        entries = [OpEntry.from_json(e) for e in result.get("entries", [])]
        return entries, result.get("next_before"), bool(result.get("more_after"))

    # ------------------------------------------------------------------ proxy rules
    # Every request about proxy rules is here, in one place.

    async def rules_list(self) -> list[RuleStatus]:
        """Every rule, as `proxy list` shows them: the config's, the gateways', the runtime ones, the forwards."""
        result = await self.request("proxy.list")
        return [RuleStatus.from_json(r) for r in result.get("rules", [])] if isinstance(result, dict) else []

    async def gateway_show(self, name: str) -> GatewayStatus:
        """A gateway plan: its formula, every port with its state, its clashes."""
        return GatewayStatus.from_json(await self.request("gateway.show", name=name))

    async def rules_add(self, direction: str, text: str, via: str) -> RuleStatus:
        """Add a rule at run time (kept by the daemon); its state after the first try to listen. ConsoleError with
        the daemon's one line when it is refused (a clash, already there)."""
        return RuleStatus.from_json(await self.request("proxy.add", direction=direction, rule=text, via=via))

    async def rules_remove(self, rule: RuleStatus) -> None:
        await self.request("proxy.remove", direction=rule.direction, rule=rule.rule, via=rule.via)

    def rule_vias(self) -> list[str]:
        """What a new rule may go via: local, scope (egress: the destination's endpoint picks the unit), or a unit."""
        from console.core.rules import LOCAL, SCOPE

        return [LOCAL, SCOPE, *self.unit_names()]

    @staticmethod
    def rule_problem(text: str) -> str | None:
        """What is wrong with a rule's text, in the parser's one line (as `proxy add` says it); None when it reads."""
        from console.core.rules import RuleError, parse_rule_text

        try:
            parse_rule_text(text)
        except RuleError as exc:
            return str(exc)
        return None

    @staticmethod
    def not_removable(rule: RuleStatus) -> str | None:
        """Why a rule cannot be removed at run time (the config's, a gateway's, a unit's forward), in the words of
        `proxy remove`; None for a rule added at run time."""
        from console.core.rule_table import removal_refused

        return removal_refused(f"{rule.direction} {rule.rule} via {rule.via}", rule, "the config")

def _read_config(path: Path) -> tuple[Config | None, list[str]]:
    """The config file read and checked: the config, or None and its problems (one `FILE:LINE: ...` each)."""
    from console.core.config import load_config
    from console.core.errors import ConfigError

    try:
        return load_config(path), []
    except ConfigError as exc:
        return None, list(exc.problems)
