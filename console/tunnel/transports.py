"""What carries a unit's connection (tunnel.transport): asyncssh in this process (the default), or OpenSSH's `ssh`
as a supervised control master (console/tunnel/openssh_unit.py)."""

from __future__ import annotations

from console.core.config import TunnelConfig, UnitConfig
from console.tunnel.openssh_unit import OpenSshUnitWorker
from console.tunnel.worker import UnitWorker, WorkerEnv


def new_worker(unit: UnitConfig, tunnel: TunnelConfig, env: WorkerEnv) -> UnitWorker:
    kind = OpenSshUnitWorker if tunnel.transport == "openssh" else UnitWorker
    return kind(unit, tunnel, env)
