"""`sop-console daemon`: the engine in the foreground, systemd-friendly.

Logs to stderr (each line with its UTC time; under systemd without it, with the journal's priority prefix
instead); SIGTERM/SIGINT stop every tunnel cleanly within 2 s; SIGHUP reloads the config, keeping
unchanged units and forwards running (an invalid new config is reported and the old one kept).
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import os
import signal
import time
from pathlib import Path

from console.control.operations import Call, perform
from console.control.server import ControlServer
from console.core.config import Config, load_config
from console.core.errors import ConfigError, OperationFailed
from console.core.events import ReloadRefused
from console.core.paths import StatePaths
from console.core.state_lock import DaemonLock
from console.core.words import counted
from console.engine import Engine

log = logging.getLogger("console.daemon")


def under_systemd(environ: dict[str, str] | os._Environ = os.environ) -> bool:
    """Started by systemd (it sets INVOCATION_ID for every service, JOURNAL_STREAM when stderr is the journal),
    which stamps each line itself."""
    return bool(environ.get("JOURNAL_STREAM") or environ.get("INVOCATION_ID"))


class JournalFormatter(logging.Formatter):
    """Lines for the journal: the syslog priority as sd-daemon's `<N>` prefix (so `journalctl -p err` works),
    and no time stamp of our own (the journal records one)."""

    PRIORITY = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def __init__(self) -> None:
        super().__init__("%(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        priority = self.PRIORITY.get(record.levelno, 6)
        # every line of a multi-line message (a traceback) gets the prefix, or the journal files it as INFO
        return "\n".join(f"<{priority}>{line}" for line in super().format(record).splitlines())


def log_formatter(environ: dict[str, str] | os._Environ = os.environ) -> logging.Formatter:
    """The daemon's stderr lines: under systemd as JournalFormatter says; elsewhere each starts with its UTC time,
    as the tunnel log's lines do (`2026-11-22T10:00:00Z INFO console.daemon: ...`)."""
    if under_systemd(environ):
        return JournalFormatter()
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%Y-%m-%dT%H:%M:%SZ")
    formatter.converter = time.gmtime
    return formatter


def setup_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(log_formatter())
    logging.basicConfig(level=level, handlers=[handler])
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


class Daemon:
    def __init__(self, config: Config, paths: StatePaths, config_path: Path | None, *, echo_log: bool = True) -> None:
        self.paths = paths.prepare()
        self.config_path = config_path
        self.lock = DaemonLock(paths.daemon_lock)
        self.lock.acquire()
        self.engine = Engine(config, paths, echo_log=echo_log)
        self.control = ControlServer(self.engine, paths.control_socket, self.reload)
        self._stopping = asyncio.Event()
        self._tasks: set[asyncio.Task] = set()  # signal-started work, held so the loop cannot drop it
        self._started = False

    async def reload(self) -> list[str]:
        if self.config_path is None:
            raise OperationFailed("this engine was started without a config file; nothing to reload")
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            self.engine.tunnel_log.write("engine", f"reload refused: {counted(len(exc.problems), 'problem')} in the config; "
                                                   "the running configuration stays")
            self.engine.bus.publish(ReloadRefused(tuple(exc.problems)))
            raise
        return await self.engine.reload(config)

    def request_stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self._on_sighup)
        try:
            await self.start()
            await self._stopping.wait()
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self.close()

    async def start(self) -> None:
        await self.engine.start()
        await self.control.start()
        self._started = True
        self._record("daemon start", details={"pid": os.getpid(), "config": str(self.config_path or "(none)")})
        log.info("daemon %d serving %s", os.getpid(), self.paths.control_socket)

    def _record(self, action: str, **entry) -> None:
        """An entry the daemon writes of itself (its start and stop), through the one recorder."""
        self.engine.recorder.record(action, who=getpass.getuser(), via="daemon", **entry)

    async def close(self) -> None:
        await self.control.close()
        if self._started:  # a daemon that started (not one whose start failed half way)
            self._started = False
            self._record("daemon stop", details={"pid": os.getpid()})
        await self.engine.shutdown()
        self.lock.release()
        log.info("daemon stopped")

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self._reload_quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_quietly(self) -> None:
        """SIGHUP: the reload goes through the operation table like a request, so it is recorded the same way
        (who sent the signal is not known: the entry says SIGHUP)."""
        call = Call("SIGHUP", self.engine, self.engine.clients, self.reload, via="config-reload",
                    recorder=self.engine.recorder)
        try:
            changes = await perform(call, "reload", {})
            log.info("reloaded: %s", "; ".join(changes) or "nothing changed")
        except (ConfigError, OperationFailed):
            pass
