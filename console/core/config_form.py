"""The seed's configuration form (server; per unit: username, forwarded ssh, http and app ports) over the YAML
file: read the fields from a config, write them back into the file's data, validate as `check` does, save.

Only what the form shows is changed: other keys and other forwards stay as they were. Comments are not kept
(PyYAML drops them); the previous file is kept beside it as FILE.bak.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from console.core.choices import UNIT_NAMES
from console.core.config import SEED_FORWARDS, Config, parse_config
from console.core.config_file import MAX_CONFIG_BYTES, _too_large, load_yaml, read_config_text
from console.core.errors import ConfigError, OperationFailed, os_reason
from console.core.paths import atomic_write, write_failure

# form field -> (forward name, port on the target, or the field that holds it)
SHORTHAND_KEYS = ("target", "ssh_port", "http_port", "app_port", "app_target_port")


@dataclass
class UnitForm:
    username: str = "root"
    target: str = "127.0.0.1"
    ssh_port: str = ""
    http_port: str = ""
    app_port: str = ""
    app_target_port: str = ""


@dataclass
class ConfigForm:
    host: str = ""
    port: str = "22"
    host_key_policy: str = "strict"
    units: dict[str, UnitForm] = field(default_factory=lambda: {name: UnitForm() for name in UNIT_NAMES})


def form_from_config(config: Config | None) -> ConfigForm:
    form = ConfigForm()
    if config is None:
        return form
    if config.server is not None:
        form.host, form.port = config.server.host, str(config.server.port)
        form.host_key_policy = config.server.host_key_policy
    for name, unit in config.units.items():
        entry = form.units[name]
        entry.username = unit.username
        if form.host == "" and unit.server is not None:
            form.host, form.port = unit.server.host, str(unit.server.port)
        for key, (fwd_name, _) in SEED_FORWARDS.items():
            forward = next((f for f in unit.forwards if f.name == fwd_name), None)
            if forward is not None:
                setattr(entry, key, str(forward.remote_port))
                entry.target = forward.local_host
                if key == "app_port":
                    entry.app_target_port = str(forward.local_port)
    return form


def _port(text: str) -> int | str:
    """A number when the field holds one, else the text, so validation reports it in check's words."""
    text = text.strip()
    return int(text) if text.isdigit() else text


def apply_form(raw: dict | None, form: ConfigForm) -> dict:
    """The file's data with the form's fields written into it (canonical forwards; other forwards kept)."""
    data = dict(raw or {})
    # The form's server is the endpoint default: the top-level server:, or endpoints.default in a file that has it.
    endpoints = data.get("endpoints")
    in_endpoints = "server" not in data and isinstance(endpoints, dict) and isinstance(endpoints.get("default"), dict)
    server = dict((endpoints["default"] if in_endpoints else data.get("server")) or {})
    server["host"] = form.host.strip()
    server["port"] = _port(form.port) if form.port.strip() else 22
    server["host_key_policy"] = form.host_key_policy
    if in_endpoints:
        data["endpoints"] = {**endpoints, "default": server}
    else:
        data["server"] = server
    units = dict(data.get("units") or {})
    for name, entry in form.units.items():
        filled = any(getattr(entry, key).strip() for key in SEED_FORWARDS)
        if not filled and name not in units:
            continue  # an absent unit stays absent
        unit = {k: v for k, v in dict(units.get(name) or {}).items() if k not in SHORTHAND_KEYS}
        unit["username"] = entry.username.strip() or "root"
        existing = {f.get("name"): f for f in (unit.get("forwards") or []) if isinstance(f, dict)}
        forwards = [f for f in (unit.get("forwards") or [])
                    if not (isinstance(f, dict) and f.get("name") in ("ssh", "http", "app"))]
        target = entry.target.strip() or "127.0.0.1"
        for key, (fwd_name, local) in SEED_FORWARDS.items():
            value = getattr(entry, key).strip()
            if not value:
                continue  # an emptied field removes that forward
            # A forward that exists keeps what the form does not show (remote_bind, its local port).
            forward = dict(existing.get(fwd_name) or {"name": fwd_name})
            if isinstance(local, str):
                local_port = _port(entry.app_target_port)
            else:
                old_local = str(forward.get("local", ""))
                local_port = old_local.rsplit(":", 1)[1] if ":" in old_local else local
            forward["remote_port"] = _port(value)
            forward["local"] = f"{target}:{local_port}"
            forwards.append(forward)
        unit["forwards"] = forwards
        units[name] = unit
    data["units"] = units
    return data


def render(data: dict) -> str:
    return yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)


def read_raw(path: Path) -> dict:
    """The file's data to edit, read within check's bounds (size, nesting, aliases)."""
    try:
        loaded = load_yaml(read_config_text(path), str(path))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{path}: cannot read: {os_reason(exc)}"]) from None
    return loaded if isinstance(loaded, dict) else {}


def check_form(path: Path, form: ConfigForm) -> tuple[str, Config]:
    """The new file's text and its config; ConfigError with check's messages when it does not validate,
    each naming what the form shows (units.master.ssh.remote_port, not a line of a file not yet written)."""
    data = apply_form(read_raw(path), form)
    text = render(data)
    try:
        return text, parse_config(text, str(path))
    except ConfigError as exc:
        raise ConfigError([_form_words(problem, data) for problem in exc.problems]) from None


def _form_words(problem: str, data: dict) -> str:
    """'FILE:LINE: units.master.forwards[0].remote_port: ...' -> 'units.master.ssh.remote_port: ...'."""
    text = re.sub(r"^.*?:\d+: ", "", problem, count=1)  # the file and line of a file not written yet
    text = re.sub(r"^endpoints\.default\.", "server.", text)   # the form's server is the endpoint default
    match = re.match(r"units\.(\w+)\.forwards\[(\d+)\](.*)", text)
    if match:
        unit, index, rest = match.group(1), int(match.group(2)), match.group(3)
        forwards = ((data.get("units") or {}).get(unit) or {}).get("forwards") or []
        if index < len(forwards) and isinstance(forwards[index], dict) and forwards[index].get("name"):
            text = f"units.{unit}.{forwards[index]['name']}{rest}"
    return text


def save_form(path: Path, form: ConfigForm) -> Config:
    """Validate, keep the previous file as PATH.bak, write the new one; both writes atomic, so a full disk
    (WriteFailed: "no space left on DEVICE writing FILE") leaves each file whole, old or new."""
    text, config = check_form(path, form)
    _write_keeping_backup(path, text)
    return config


def save_text(path: Path, text: str) -> Config:
    """The file's own text, as typed in Configure's editor (for a file the form cannot read): checked with the
    parser `check` uses (ConfigError: one `FILE:LINE: ...` per problem, nothing written), then saved as the form
    saves, the previous file kept as PATH.bak. The text is written as it is, comments included."""
    size = len(text.encode())
    if size > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}:1: {_too_large(size)}"])
    config = parse_config(text, str(path))
    _write_keeping_backup(path, text)
    return config


def _write_keeping_backup(path: Path, text: str) -> None:
    try:
        previous = path.read_bytes()
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        previous = None
    except OSError as exc:
        raise OperationFailed(f"cannot read {path}: {os_reason(exc)}") from None
    if previous is not None:
        atomic_write(path.with_name(path.name + ".bak"), previous, mode=mode)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise write_failure(exc, path) from exc
    atomic_write(path, text.encode(), mode=0o600)
