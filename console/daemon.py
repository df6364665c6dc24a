"""`sop-console daemon`: the engine in the foreground, systemd-friendly.

Logs to stderr; SIGTERM/SIGINT stop every tunnel cleanly within 2 s; SIGHUP reloads the config, keeping
unchanged units and forwards running (an invalid new config is reported and the old one kept).
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
from pathlib import Path

from console.control.server import ControlServer
from console.core.config import Config, load_config
from console.core.errors import ConfigError, OperationFailed
from console.core.paths import StatePaths
from console.engine import Engine

log = logging.getLogger("console.daemon")


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncssh").setLevel(logging.WARNING)


class DaemonLock:
    """One daemon per state dir: an flock on daemon.lock, released by the kernel if we die."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OperationFailed(f"another daemon already runs on state dir {self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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

    async def reload(self) -> list[str]:
        if self.config_path is None:
            raise OperationFailed("this engine was started without a config file; nothing to reload")
        try:
            config = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload refused: %s", problem)
            self.engine.tunnel_log.write("engine", f"reload refused: {len(exc.problems)} problem(s) in the config; "
                                                   "the running configuration stays")
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
        log.info("daemon %d serving %s", os.getpid(), self.paths.control_socket)

    async def close(self) -> None:
        await self.control.close()
        await self.engine.shutdown()
        self.lock.release()
        log.info("daemon stopped")

    def _on_sighup(self) -> None:
        task = asyncio.create_task(self._reload_quietly())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _reload_quietly(self) -> None:
        try:
            changes = await self.reload()
            log.info("reloaded: %s", "; ".join(changes) or "nothing changed")
        except (ConfigError, OperationFailed):
            pass
