"""An endpoint's OpenSSH server settings, judged against what its units' forwards need (`endpoints check-sshd`).

Pure: no connection, no process. `console/tunnel/sshd_check.py` fetches the text (the output of `sshd -T`, or the
config files themselves when `sshd -T` is not allowed) and calls these:

- `parse_effective(text)`: what `sshd -T` printed, keyword -> value (lower-case keywords, as sshd prints them).
- `FileReader`: OpenSSH's own reading of sshd_config and its `Include`s (keywords case-insensitive, `keyword=value`,
  quotes, the first value wins, `Match` blocks apart), turned into the same keyword -> value form with sshd's
  defaults for what is not set. Match blocks are not evaluated (we do not know the group, the address...): each one
  that sets a keyword we judge is named in the notes. `Match all` before any other Match setting it is applied.
- `judge(values, needs)`: one `SshdSetting` per setting (ok / needs-change / note, why, the exact lines to write).
- `render(check)`: the CLI's text, 80 columns.

Why each setting matters (../shared/DESIGN.md "OpenSSH server settings that matter to our units"):
GatewayPorts (no = every remote forward binds loopback), AllowTcpForwarding / DisableForwarding (remote forwards;
local ones for egress rules), PermitListen (matches the *requested host string*: `localhost` is not `127.0.0.1`),
ClientAliveInterval x ClientAliveCountMax (how long a dead session keeps its ports: "the stale-port problem"),
UnusedConnectionTimeout (9.2+: `-R` listeners are not open channels, so it cuts a forward-only session),
PerSourcePenalties (9.8+: units behind one NAT share an address and its penalties).
"""

from __future__ import annotations

import fnmatch
import ipaddress
import re
import textwrap
from collections.abc import Iterable
from dataclasses import dataclass, field

from console.core.states import SshdSettingState
from console.core.status import SshdCheck, SshdSetting
from console.core.words import counted, noun

# What the server sends is bounded before it is parsed (the tunnel side also cuts what it reads).
MAX_TEXT = 256 * 1024      # bytes of sshd -T output or of one config file
MAX_LINES = 4000           # lines of one text
MAX_FILES = 64             # config files followed through Include
MAX_DEPTH = 16             # Include depth (OpenSSH's own limit)
SHOWN = 60                 # characters of a value shown
PATH_SHOWN = 200           # characters of a path shown

# The stale-port wait we recommend: a dead session frees its ports after 15 s x 3 = 45 s. The units' own keepalive
# (5 s x 3 by default) notices the loss first and retries the refused forward until the port is free, so this is
# how long a forward stays refused after a unit's link drops. 3 unanswered probes 15 s apart ride out ~30 s of a
# stalled link (mobile, satellite) without cutting a live session; a probe is one small packet per idle session.
ALIVE_INTERVAL = 15
ALIVE_COUNT = 3
LONGEST_WAIT = 300         # a wait above this (5 min) needs change too: ports held that long look like an outage

# sshd's defaults for what we judge (OpenSSH 9.x), as `sshd -T` prints them.
DEFAULTS = {
    "gatewayports": "no", "allowtcpforwarding": "yes", "disableforwarding": "no", "permitlisten": "any",
    "permitopen": "any", "clientaliveinterval": "0", "clientalivecountmax": "3", "maxsessions": "10",
    "unusedconnectiontimeout": "none", "persourcepenalties": "yes",
}
# From which version sshd knows a keyword (older ones refuse the line: never write it there).
SINCE = {"unusedconnectiontimeout": (9, 2), "persourcepenalties": (9, 8)}
SPELLING = {
    "gatewayports": "GatewayPorts", "allowtcpforwarding": "AllowTcpForwarding",
    "disableforwarding": "DisableForwarding", "permitlisten": "PermitListen", "permitopen": "PermitOpen",
    "clientaliveinterval": "ClientAliveInterval", "clientalivecountmax": "ClientAliveCountMax",
    "maxsessions": "MaxSessions", "unusedconnectiontimeout": "UnusedConnectionTimeout",
    "persourcepenalties": "PerSourcePenalties",
}
_TIME_KEYWORDS = {"clientaliveinterval", "unusedconnectiontimeout"}
_LIST_KEYWORDS = {"permitlisten", "permitopen"}


# ---------------------------------------------------------------------------------------------------- what we need

@dataclass(frozen=True)
class Listen:
    """One remote forward as a unit asks for it: the bind host string exactly as sent ("" = the server's choice),
    the port (0 = the server chooses) and whose it is, for the messages."""

    host: str
    port: int
    where: str = ""

    @property
    def beyond_loopback(self) -> bool:
        """Asks for more than loopback: an explicit address that is not 127.x / ::1 / localhost ("" leaves it to
        the server's GatewayPorts, so it asks for nothing)."""
        if self.host in ("", "localhost"):
            return False
        try:
            return not ipaddress.ip_address(self.host.strip("[]")).is_loopback
        except ValueError:
            return True  # a name or "*": sshd binds what it resolves to / every address

    @property
    def shown(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else (self.host or "*")
        return f"{host}:{self.port or '*'}"


@dataclass(frozen=True)
class ForwardNeeds:
    """What an endpoint's forwards need from its sshd: the remote forwards its units ask for, and whether egress
    rules (local forwards through the endpoint) use it."""

    listens: tuple[Listen, ...] = ()
    egress: bool = False

    @property
    def beyond_loopback(self) -> list[Listen]:
        return [listen for listen in self.listens if listen.beyond_loopback]


def needs_of(units: Iterable, *, egress: bool = False) -> ForwardNeeds:
    """The needs of these units (UnitConfig: name, forwards with remote_bind and remote_port)."""
    return ForwardNeeds(tuple(Listen(fwd.remote_bind, fwd.remote_port, f"unit {unit.name} forward {fwd.name}")
                              for unit in units for fwd in unit.forwards), egress)


# ---------------------------------------------------------------------------------------------------- reading

@dataclass
class SshdReading:
    """The settings as read from one server, before judging: keyword -> value in `sshd -T`'s form."""

    values: dict[str, str]
    source: str                    # "sshd -T" or "files"
    how: str                       # one line: "effective settings from sshd -T" / "read from ...; Match blocks ..."
    config_file: str
    listener_pid: int | None = None
    privilege: str = "none"        # what a fix could use: "root", "sudo" or "none"
    server_version: str = ""
    defaults: set[str] = field(default_factory=set)  # keywords not set anywhere (sshd's default applies)
    notes: list[str] = field(default_factory=list)


def shown(text: str, limit: int = SHOWN) -> str:
    """Server-sent text made safe to print: control characters as '?', at most `limit` characters."""
    clean = "".join(char if char.isprintable() else "?" for char in text)
    return clean if len(clean) <= limit else clean[:limit] + "…"


def version_of(server_version: str) -> tuple[int, int] | None:
    """(9, 2) from "SSH-2.0-OpenSSH_9.2p1 Debian-2"; None when it is not OpenSSH or says no version."""
    found = re.search(r"OpenSSH_(\d+)\.(\d+)", server_version or "")
    return (int(found.group(1)), int(found.group(2))) if found else None


def _lines(text: str) -> list[str]:
    return text[:MAX_TEXT].splitlines()[:MAX_LINES]


def parse_effective(text: str) -> dict[str, str]:
    """`sshd -T` output: "keyword value..." per line, keywords already lower case. The first line of a keyword
    wins (sshd prints multi-valued keywords such as port on several lines; we judge none of those)."""
    values: dict[str, str] = {}
    for line in _lines(text):
        keyword, _, value = line.strip().partition(" ")
        if keyword and keyword.lower() not in values:
            values[keyword.lower()] = value.strip()
    return values


def split_line(line: str) -> list[str]:
    """One sshd_config line as OpenSSH splits it: the keyword ends at whitespace or one '='; then arguments
    separated by whitespace, "double" or 'single' quoted, a '#' at an argument's start ends the line."""
    text = line.strip()
    if not text or text.startswith("#"):
        return []
    found = re.match(r"([^\s=]+)\s*=?\s*", text)
    if found is None:
        return []
    words, rest = [found.group(1)], text[found.end():]
    for quoted_double, quoted_single, bare in re.findall(r'"([^"]*)"|\'([^\']*)\'|(\S+)', rest):
        if bare.startswith("#"):
            break
        words.append(quoted_double or quoted_single or bare)
    return words


def seconds_of(text: str) -> int | None:
    """OpenSSH's time format: "90", "1m30s", "2h" (s m h d w); None when it is not one."""
    if text.isdigit():
        return int(text)
    parts = re.fullmatch(r"((\d+)[sSmMhHdDwW])+", text)
    if not parts:
        return None
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    return sum(int(n) * scale[unit.lower()] for n, unit in re.findall(r"(\d+)([a-zA-Z])", text))


def _normal(keyword: str, words: list[str]) -> str:
    """A value from a config file in the form `sshd -T` prints it."""
    if keyword in _LIST_KEYWORDS:
        items = [w.lower() if w.lower() in ("any", "none") else w for w in words]
        return " ".join(item if item in ("any", "none") or ":" in item else f"*:{item}" for item in items)
    value = words[0] if words else ""
    if keyword in _TIME_KEYWORDS:
        if value.lower() == "none":
            return "none"
        seconds = seconds_of(value)
        return str(seconds) if seconds is not None else value
    if keyword == "allowtcpforwarding" and value.lower() == "all":
        return "yes"
    return value.lower() if keyword in ("gatewayports", "allowtcpforwarding", "disableforwarding") else value


@dataclass
class _Matched:
    criteria: str
    value: str
    where: str


class FileReader:
    """sshd_config read the way sshd reads it, from texts fetched from the server.

    `files` maps a path to its text (None: it exists but could not be read); `globs` maps an Include pattern
    (absolute, as OpenSSH makes it: relative to /etc/ssh) to the paths it matched, in sshd's (sorted) order.
    `wanted()` says which patterns are still to be fetched, so the caller fetches level by level."""

    SSHDIR = "/etc/ssh"

    def __init__(self, main: str) -> None:
        self.main = main
        self.files: dict[str, str | None] = {}
        self.globs: dict[str, list[str]] = {}

    @classmethod
    def absolute(cls, pattern: str) -> str:
        return pattern if pattern.startswith("/") else f"{cls.SSHDIR}/{pattern}"

    def includes(self, text: str) -> list[str]:
        found = []
        for line in _lines(text):
            words = split_line(line)
            if words and words[0].lower() == "include":
                found.extend(self.absolute(w) for w in words[1:])
        return found

    def wanted(self) -> list[str]:
        """Include patterns met in the files read so far and not fetched yet (the main file first)."""
        if self.main not in self.files:
            return [self.main]
        patterns: list[str] = []
        for text in self.files.values():
            for pattern in self.includes(text or ""):
                if pattern not in self.globs and pattern not in patterns:
                    patterns.append(pattern)
        return patterns

    def add(self, pattern: str, found: list[tuple[str, str | None]]) -> None:
        """What one fetch found for a pattern: (path, text or None when unreadable), sorted as sshd sorts."""
        if pattern != self.main:
            self.globs[pattern] = [path for path, _ in found]
        for path, text in found[:MAX_FILES]:
            if len(self.files) < MAX_FILES:
                self.files[path] = text

    def reading(self, *, listener_pid: int | None = None, privilege: str = "none", server_version: str = "",
                notes: list[str] | None = None) -> SshdReading:
        """The values the files give: first global value wins; Match blocks only named (but `Match all`)."""
        notes = list(notes or [])
        values: dict[str, str] = {}
        matched: dict[str, list[_Matched]] = {}
        read: list[str] = []
        problems: list[str] = []

        def walk(path: str, depth: int, match: str | None) -> None:
            text = self.files.get(path)
            if text is None:
                problems.append(f"cannot read {shown(path, PATH_SHOWN)} (its settings are not included here)"
                                if path in self.files else f"{shown(path, PATH_SHOWN)} was not fetched")
                return
            if path not in read:
                read.append(path)
            for number, line in enumerate(_lines(text), 1):
                words = split_line(line)
                if not words:
                    continue
                keyword = words[0].lower()
                if keyword == "match":
                    criteria = " ".join(words[1:])
                    match = criteria if criteria.lower() != "all" else "all"
                elif keyword == "include":
                    if depth >= MAX_DEPTH:
                        problems.append(f"Include nested deeper than {MAX_DEPTH} at "
                                        f"{shown(path, PATH_SHOWN)}:{number}")
                        continue
                    for pattern in words[1:]:
                        for included in self.globs.get(self.absolute(pattern), []):
                            walk(included, depth + 1, match)
                elif keyword in DEFAULTS:
                    value = _normal(keyword, words[1:])
                    if match is None:
                        values.setdefault(keyword, value)
                    else:
                        where = f"{shown(path, PATH_SHOWN)}:{number}"
                        matched.setdefault(keyword, []).append(_Matched(match, value, where))

        walk(self.main, 0, None)
        for keyword, blocks in matched.items():
            first = blocks[0]
            if first.criteria == "all":   # every connection takes it, before any global line (sshd's match pass)
                values[keyword] = first.value
                notes.append(f"{SPELLING[keyword]} {shown(first.value)} comes from 'Match all' at {first.where}")
                blocks = blocks[1:]
            for block in blocks:
                notes.append(f"'Match {shown(block.criteria)}' at {block.where} sets {SPELLING[keyword]} "
                             f"{shown(block.value)} (not evaluated)")
        defaults = {keyword for keyword in DEFAULTS if keyword not in values}
        version = version_of(server_version)
        for keyword in defaults:
            since = SINCE.get(keyword)
            if since is None or (version is not None and version >= since):
                values[keyword] = DEFAULTS[keyword]
        included = len(read) - 1
        how = f"read from {shown(self.main, PATH_SHOWN)}"
        how += f" and {counted(included, 'included file')}" if included else ""
        how += "; Match blocks not evaluated" if any(matched.values()) else ""
        return SshdReading(values, "files", how, self.main, listener_pid, privilege, server_version, defaults,
                           problems + notes)


# ---------------------------------------------------------------------------------------------------- judging

def _setting(keyword: str, state: SshdSettingState, value: str, why: str, lines: list[str] | None = None,
             ) -> SshdSetting:
    return SshdSetting(SPELLING.get(keyword, keyword), state, shown(value), why, list(lines or []))


def _names(listens: list[Listen], limit: int = 2) -> str:
    named = ", ".join(f"{listen.where or 'a forward'} ({listen.shown})" for listen in listens[:limit])
    return named + (f" and {len(listens) - limit} more" if len(listens) > limit else "")


def _gateway_ports(values: dict[str, str], needs: ForwardNeeds) -> SshdSetting:
    value = values.get("gatewayports", "no")
    beyond = needs.beyond_loopback
    if beyond and value not in ("yes", "clientspecified"):
        return _setting("gatewayports", SshdSettingState.CHANGE, value,
                        f"{_names(beyond)} {noun(len(beyond), 'binds', 'bind')} beyond loopback; with "
                        f"'{value}' sshd binds every remote forward to loopback only",
                        ["GatewayPorts clientspecified"])
    loopback = [listen for listen in needs.listens if listen.host and not listen.beyond_loopback]
    if value == "yes" and loopback:
        return _setting("gatewayports", SshdSettingState.NOTE, value,
                        f"'yes' makes every forward listen on all addresses, also {_names(loopback)} that "
                        "asks for loopback; clientspecified lets each forward's remote_bind decide",
                        ["GatewayPorts clientspecified"])
    if beyond:
        why = f"forwards may bind beyond loopback ({_names(beyond)})"
    elif value == "no":
        why = "no forward binds beyond loopback; every remote forward listens on loopback only"
    else:
        why = "no forward needs more than loopback"
    return _setting("gatewayports", SshdSettingState.OK, value, why)


def _tcp_forwarding(values: dict[str, str], needs: ForwardNeeds) -> list[SshdSetting]:
    out = []
    disabled = values.get("disableforwarding", "no")
    remote = bool(needs.listens)
    if disabled == "yes" and (remote or needs.egress):
        out.append(_setting("disableforwarding", SshdSettingState.CHANGE, disabled,
                            "DisableForwarding yes refuses every forward, whatever AllowTcpForwarding says",
                            ["DisableForwarding no"]))
    elif disabled == "yes":
        out.append(_setting("disableforwarding", SshdSettingState.OK, disabled, "no forward uses this endpoint"))
    value = values.get("allowtcpforwarding", "yes")
    allowed = {"yes": {"remote", "local"}, "remote": {"remote"}, "local": {"local"}}.get(value, set())
    needed = ({"remote"} if remote else set()) | ({"local"} if needs.egress else set())
    missing = needed - allowed
    if missing:
        wanted = needed | allowed
        line = "AllowTcpForwarding " + ("yes" if wanted >= {"remote", "local"} else next(iter(wanted)))
        what = " and ".join(sorted(missing, reverse=True))
        why = (f"{what} forwards are refused with '{value}'; "
               + ("the units' tunnels are remote forwards" if "remote" in missing else "egress rules are local "
                  "forwards"))
        out.append(_setting("allowtcpforwarding", SshdSettingState.CHANGE, value, why, [line]))
    else:
        uses = " and ".join(sorted(needed, reverse=True)) or "no"
        out.append(_setting("allowtcpforwarding", SshdSettingState.OK, value,
                            f"allows what the forwards use ({uses} forwarding)"))
    return out


def _listen_allows(entry: str, listen: Listen) -> bool:
    """sshd's remote_open_match: the port equal (or '*'), the requested host string (lower case) against the
    entry's host pattern. The request's exact string: '127.0.0.1' does not match 'localhost'."""
    host, _, port = entry.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if port != "*" and (not port.isdigit() or int(port) != listen.port):
        return False
    return fnmatch.fnmatchcase(listen.host.lower(), host.lower() or "*")


def _permit_listen(values: dict[str, str], needs: ForwardNeeds) -> SshdSetting:
    value = values.get("permitlisten", "any")
    if value == "any" or not needs.listens:
        return _setting("permitlisten", SshdSettingState.OK, value,
                        "every remote forward may listen" if value == "any" else "no remote forward asked")
    entries = [] if value == "none" else value.split()
    refused = [listen for listen in needs.listens if not any(_listen_allows(e, listen) for e in entries)]
    if not refused:
        return _setting("permitlisten", SshdSettingState.OK, value,
                        f"allows all {counted(len(needs.listens), 'forward')} asked for")
    why = f"refuses {_names(refused)}"
    alias = {"localhost": "127.0.0.1", "127.0.0.1": "localhost"}
    for listen in refused:
        other = alias.get(listen.host)
        if other and any(_listen_allows(e, Listen(other, listen.port)) for e in entries):
            why += (f"; it allows {other} but the forward asks for {listen.host or '*'}: sshd matches the "
                    "requested host string, and localhost is not 127.0.0.1")
            break
    if any(listen.port == 0 for listen in refused):
        why += "; a forward with remote_port 0 needs a '*' port"
    line = "PermitListen " + " ".join(entries + [e for e in dict.fromkeys(r.shown for r in refused)
                                                 if e not in entries])
    return _setting("permitlisten", SshdSettingState.CHANGE, value, why, [line])


def _permit_open(values: dict[str, str], needs: ForwardNeeds) -> SshdSetting | None:
    if not needs.egress:
        return None
    value = values.get("permitopen", "any")
    if value == "none":
        return _setting("permitopen", SshdSettingState.CHANGE, value,
                        "egress rules are local forwards, and 'none' refuses every one", ["PermitOpen any"])
    if value != "any":
        return _setting("permitopen", SshdSettingState.NOTE, value,
                        "egress rules may reach only these destinations; add a rule's destination here "
                        "if it is refused")
    return _setting("permitopen", SshdSettingState.OK, value, "egress rules may reach any destination")


def _client_alive(values: dict[str, str]) -> SshdSetting:
    interval_text = values.get("clientaliveinterval", "0")
    count_text = values.get("clientalivecountmax", "3")
    shown_value = f"{interval_text} x {count_text}"
    lines = [f"ClientAliveInterval {ALIVE_INTERVAL}", f"ClientAliveCountMax {ALIVE_COUNT}"]
    recommend = (f"{ALIVE_INTERVAL} s x {ALIVE_COUNT} frees them {ALIVE_INTERVAL * ALIVE_COUNT} s after the "
                 "link drops and rides out ~30 s of a stalled link")
    if not (interval_text.isdigit() and count_text.isdigit()):
        return _setting("clientaliveinterval", SshdSettingState.CHANGE, shown_value,
                        f"not a number of seconds; {recommend}", lines)
    interval, count = int(interval_text), int(count_text)
    if interval == 0 or count == 0:
        which = "ClientAliveInterval 0" if interval == 0 else "ClientAliveCountMax 0"
        return _setting("clientaliveinterval", SshdSettingState.CHANGE, shown_value,
                        f"stale-port wait: forever ({which}): a dead session keeps its forwarded ports and the "
                        f"unit's reconnect is refused; {recommend}", lines)
    wait = interval * count
    if wait > LONGEST_WAIT:
        return _setting("clientaliveinterval", SshdSettingState.CHANGE, shown_value,
                        f"stale-port wait: {wait} s: a unit's forwards stay refused that long after its link "
                        f"drops; {recommend}", lines)
    return _setting("clientaliveinterval", SshdSettingState.OK, shown_value,
                    f"stale-port wait: {wait} s: a dead session frees its ports after {wait} s")


def _max_sessions(values: dict[str, str]) -> SshdSetting:
    value = values.get("maxsessions", "10")
    if value == "0":
        return _setting("maxsessions", SshdSettingState.NOTE, value,
                        "forwards are not sessions and still work, but 0 refuses every command: this check and "
                        "set-up cannot run here", ["MaxSessions 10"])
    return _setting("maxsessions", SshdSettingState.OK, value,
                    "forwards are not sessions: any value serves them")


def _unused_timeout(values: dict[str, str]) -> SshdSetting | None:
    if "unusedconnectiontimeout" not in values:
        return None  # an sshd before 9.2 has no such setting
    value = values["unusedconnectiontimeout"]
    if value in ("none", "0"):
        return _setting("unusedconnectiontimeout", SshdSettingState.OK, value,
                        "sessions without open channels are kept")
    return _setting("unusedconnectiontimeout", SshdSettingState.CHANGE, value,
                    f"cuts a session after {value} s without an open channel, and a -R listener is not one: a "
                    "unit whose forwards carry no connection is cut and reconnects", ["UnusedConnectionTimeout none"])


def _penalties(values: dict[str, str]) -> SshdSetting | None:
    if "persourcepenalties" not in values:
        return None  # before 9.8
    value = values["persourcepenalties"]
    if value == "no":
        return _setting("persourcepenalties", SshdSettingState.OK, value, "no per-address penalties")
    return _setting("persourcepenalties", SshdSettingState.NOTE, value,
                    "units behind one NAT share its address: failed logins of one penalise all of them; "
                    "list that address in PerSourcePenaltyExemptList if the units share one")


def judge(values: dict[str, str], needs: ForwardNeeds) -> list[SshdSetting]:
    """One line per setting, in the order an operator reads them."""
    found: list[SshdSetting | None] = [
        _gateway_ports(values, needs), *_tcp_forwarding(values, needs), _permit_listen(values, needs),
        _permit_open(values, needs), _client_alive(values), _max_sessions(values), _unused_timeout(values),
        _penalties(values)]
    return [setting for setting in found if setting is not None]


def stock_settings(needs: ForwardNeeds) -> list[SshdSetting]:
    """The judgement of a stock OpenSSH (its defaults) for these needs: what a script for a server nobody has read
    yet writes (`setup-auth --method script`). Keywords newer than 9.0 are left out: an older sshd refuses them."""
    stock = {keyword: value for keyword, value in DEFAULTS.items() if keyword not in SINCE}
    return judge(stock, needs)


# ---------------------------------------------------------------------------------------------------- showing

def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _wrap(text: str, width: int, indent: str, more: str | None = None) -> list[str]:
    return textwrap.wrap(text, width, initial_indent=indent, subsequent_indent=more if more is not None else indent,
                         break_on_hyphens=False) or [indent.rstrip()]


def render(check: SshdCheck, width: int = 80, *, fix_word: str = "--fix") -> str:
    """The CLI's text, `width` columns: a head line, how and where the settings were read, one block per setting
    (glyph, keyword, value, state word; why; the lines to write), notes, and what a fix did with the values
    before it. Only a line to write is never cut or wrapped (it is copied as it is). `fix_word`: what makes the
    fix where the text is shown (the console's dialog has a button)."""
    changes = [s for s in check.settings if s.state is SshdSettingState.CHANGE]
    head = f"sshd of {check.endpoint}: " + (f"{counted(len(changes), 'setting')} {noun(len(changes), 'needs', 'need')}"
                                            " a change" if changes else "ok for its forwards")
    where = ", ".join([check.config_file] + ([f"sshd pid {check.listener_pid}"] if check.listener_pid else [])
                      + ([check.server_version] if check.server_version else []))
    out = [head, *_wrap(check.how, width, "  "), *_wrap(where, width, "  ")]
    column = max(width - 40, 10)
    for setting in check.settings:
        out.append(f"{setting.state.glyph} {setting.keyword:<24} {_cut(setting.value, column):<{column}} "
                   f"{setting.state.value}")
        out.extend(_wrap(setting.why, width, "    "))
        if setting.state is not SshdSettingState.OK:
            out.extend(f"    write: {line}" for line in setting.lines)
    for note in check.notes:
        out.extend(_wrap(f"note: {note}", width, "  ", "    "))
    if check.fix:
        out.extend(_wrap(f"fix: {check.fix}", width, "", "  "))
        before = {s.keyword: s for s in check.before}
        for setting in check.settings:
            old = before.get(setting.keyword)
            if old is not None and (old.value != setting.value or old.state != setting.state):
                out.append(f"  {setting.keyword}: {_cut(old.value, 16)} -> {_cut(setting.value, 16)} "
                           f"({setting.state.value})")
    if changes and not check.fix:
        out.append(f"  {fix_word} writes these lines" + ("" if check.privilege != "none" else
                                                   " (needs root or password-less sudo on the server)"))
    return "\n".join(out)
