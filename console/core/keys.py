"""Unit keys: one ed25519 key per unit, made on first use, file 0600 in a 0700 dir.

The private key never leaves this module except as an asyncssh key object handed to a connect call.
"""

from __future__ import annotations

import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

import asyncssh

from console.core.errors import OperationFailed
from console.core.paths import StatePaths, ensure_private_dir


@dataclass(frozen=True)
class PublicKeyInfo:
    line: str          # "ssh-ed25519 AAAA... sop-console-master"
    fingerprint: str   # "SHA256:..."

    @property
    def key_body(self) -> str:
        return key_body(self.line)


def key_body(line: str) -> str:
    """'type base64' of a public key line, without the comment: what matching in authorized_keys goes by."""
    return " ".join(line.split()[:2])


def parse_public_key(text: str) -> asyncssh.SSHKey | None:
    try:
        return asyncssh.import_public_key(text.strip())
    except (asyncssh.KeyImportError, ValueError, TypeError):
        return None


def fingerprint(key: asyncssh.SSHKey) -> str:
    return key.get_fingerprint("sha256")


def public_line(key: asyncssh.SSHKey, comment: str | None = None) -> str:
    body = key_body(key.export_public_key("openssh").decode())
    return f"{body} {comment}" if comment else body


def _check_private_file(path: Path) -> None:
    info = path.stat()
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o600)


def load_or_create_key(path: Path, comment: str) -> asyncssh.SSHKey:
    """The private key at `path`; generated (ed25519) and written 0600 in a 0700 dir the first time."""
    ensure_private_dir(path.parent)
    try:
        _check_private_file(path)
        return asyncssh.read_private_key(str(path))
    except FileNotFoundError:
        pass
    except (asyncssh.KeyImportError, OSError) as exc:
        raise OperationFailed(f"key {path} is unreadable ({exc}); move it aside to make a new one") from None
    key = asyncssh.generate_private_key("ssh-ed25519", comment=comment)
    data = key.export_private_key("openssh")
    # Written whole under a name of its own, then linked into place: a reader (a unit worker, the daemon's endpoint
    # check at start) never sees a half-written key, and a full disk leaves no key file at all.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(tmp, path)
        except FileExistsError:  # another process made it first: use theirs
            return asyncssh.read_private_key(str(path))
    finally:
        tmp.unlink(missing_ok=True)
    path.with_name(path.name + ".pub").write_text(public_line(key, comment) + "\n")
    return key


def load_or_create_unit_key(paths: StatePaths, unit: str) -> asyncssh.SSHKey:
    """The unit's private key (state dir keys/UNIT_ed25519)."""
    ensure_private_dir(paths.root)
    return load_or_create_key(paths.unit_key(unit), f"sop-console-{unit}")


def unit_public_key(paths: StatePaths, unit: str) -> PublicKeyInfo:
    key = load_or_create_unit_key(paths, unit)
    return PublicKeyInfo(line=public_line(key, f"sop-console-{unit}"), fingerprint=fingerprint(key))
