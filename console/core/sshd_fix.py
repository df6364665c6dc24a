"""The sshd check's fix as one POSIX sh script, run as root: over the endpoint's connection (`--fix`, through
`sudo -n sh -s`), or by an operator as the end of `setup-auth --method script`'s script.

What it does, in order (each step says what it did on a line starting "sop-console: "):
1. Refuses to run as anyone but root, without an sshd binary, or on a CONF that is not a regular file.
2. `sshd -t -f CONF` first: an invalid configuration is left alone (exit 2), never made "ours" to roll back.
3. Where to write. sshd takes the *first* value of a keyword, so our lines must come before any other line that
   sets the same keyword. A drop-in DIR/50-sop-console.conf when CONF includes DIR (an `Include` before any
   `Match`, whose pattern takes that name) before any line of CONF setting our keywords, and no file of DIR sorted
   before ours sets them; else a block at the very top of CONF (so never after a `Match`), between marker lines,
   after a backup to CONF.sop-console.bak. A block already there is kept as the place.
4. Merges: lines we wrote before stay unless one of ours replaces their keyword. Same text -> nothing changes,
   nothing reloads (a second run is a no-op).
5. `sshd -t -f CONF` again: refused -> the file is restored (or our new drop-in removed), exit 3.
6. Reloads the running sshd: SIGHUP to the listener pid found by the check (sshd re-executes itself and rereads its
   config; open sessions keep theirs), else to the pid in the PidFile that `sshd -T -f CONF` names,
   else (for /etc/ssh/sshd_config only) `systemctl reload ssh` / `sshd`, or `service ... reload` when its status
   says it runs (Debian's init script says ok to a reload when nothing runs). None -> exit 4 (written, valid,
   not active yet).

The whole script is one subshell, so appended to another script its `exit`s end only this part, and its status is
the script's status when it comes last.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from console.core.states import SshdSettingState
from console.core.status import SshdSetting

DROPIN_NAME = "50-sop-console.conf"
BACKUP_SUFFIX = ".sop-console.bak"
BEGIN = "# sop-console: begin"
END = "# sop-console: end"
SAY = "sop-console: "

EXIT_DONE, EXIT_CANNOT, EXIT_INVALID_BEFORE, EXIT_REFUSED, EXIT_NOT_RELOADED = 0, 1, 2, 3, 4

_LINE = re.compile(r"[A-Za-z]+( [A-Za-z0-9_.:*\[\]@,/=+-]+)*")

_SCRIPT = r"""# sop-console: the sshd settings this endpoint's reverse tunnels need. Run as root: sh FILE.
# It writes them where sshd reads them first (a drop-in, or the top of the config with a backup), checks the result
# with sshd -t (restoring the file when refused), then reloads sshd. Running it again changes nothing.
# Exit 0 done or nothing to do, 1 cannot run here, 2 the config was invalid before (nothing changed),
# 3 sshd -t refused the change (file restored), 4 written but no running sshd could be reloaded.
(
set -u
LC_ALL=C; export LC_ALL
umask 022
conf=@CONF@
pid=@PID@
lines=@LINES@
keys=@KEYS@
name=@NAME@
backup=$conf@BACKUP@
begin='@BEGIN@ (lines for reverse tunnels; they stay first because sshd takes the first value)'
end='@END@'
say() { printf 'sop-console: %s\n' "$*"; }
first() { printf '%s' "$1" | head -n 3 | tr '\n' ' '; }

[ "$(id -u)" = 0 ] || { say "run this as root (sudo sh $0)"; exit 1; }
sshd=
exe=
[ -n "$pid" ] && exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || exe=
for candidate in "$exe" /usr/sbin/sshd /usr/local/sbin/sshd /sbin/sshd; do
    if [ -n "$candidate" ] && [ -f "$candidate" ] && [ -x "$candidate" ]; then sshd=$candidate; break; fi
done
[ -n "$sshd" ] || { say "sshd not found (looked in /usr/sbin, /usr/local/sbin, /sbin)"; exit 1; }
if [ ! -f "$conf" ] || [ -L "$conf" ]; then say "$conf is not a regular file: nothing changed"; exit 1; fi
if ! out=$("$sshd" -t -f "$conf" 2>&1); then
    say "$conf is invalid before any change, nothing changed: $(first "$out")"; exit 2
fi

# What FILE sets of our keywords, and its Include lines, before its first Match.
scan() {
    KEYS=" $keys " awk '
        { line = $0; sub(/^[ \t]+/, "", line) }
        line == "" || line ~ /^#/ { next }
        { k = line; sub(/[ \t=].*/, "", k); rest = substr(line, length(k) + 1); k = tolower(k)
          sub(/^[ \t]*=?[ \t]*/, "", rest); gsub(/"/, "", rest) }
        k == "match" { exit }
        k == "include" { print "include " rest; next }
        index(ENVIRON["KEYS"], " " k " ") { print "set " k }
    ' "$1"
}

# Our earlier lines (stdin) with ours replacing the same keywords, then our new ones.
merge() {
    NEW=$lines awk '
        function key(s) { s = tolower(s); sub(/^[ \t]+/, "", s); sub(/[ \t=].*/, "", s); return s }
        BEGIN { n = split(ENVIRON["NEW"], add, "\n"); for (i = 1; i <= n; i++) want[key(add[i])] = add[i] }
        /^[ \t]*(#|$)/ { next }
        { k = key($0); if (k in want) { if (!(k in done)) print want[k]; done[k] = 1 } else print }
        END { for (i = 1; i <= n; i++) { k = key(add[i]); if (!(k in done)) { print add[i]; done[k] = 1 } } }'
}

target=
why_main=
if grep -q "^@BEGIN@" "$conf"; then
    why_main="our block is already there"
else
    seen=
    set -f
    while IFS= read -r item; do
        case $item in
        set\ *) [ -n "$seen" ] || seen=${item#set } ;;
        include\ *)
            for pattern in ${item#include }; do
                case $pattern in /*) ;; *) pattern=/etc/ssh/$pattern ;; esac
                dir=${pattern%/*}; base=${pattern##*/}
                case $dir in *[*?[]*) continue ;; esac
                [ -d "$dir" ] || continue
                case $name in $base) ;; *) continue ;; esac
                if [ -n "$seen" ]; then why_main="$conf sets $seen before its Include of $dir"
                else target=$dir/$name; fi
                break 2
            done ;;
        esac
    done <<SCAN
$(scan "$conf")
SCAN
    set +f
    if [ -n "$target" ]; then
        for other in "$dir"/$base; do
            [ -f "$other" ] && [ "$other" != "$target" ] || continue
            [ "$(printf '%s\n%s\n' "${other##*/}" "$name" | sort | head -n 1)" = "${other##*/}" ] || continue
            if scan "$other" | grep -q '^set '; then
                why_main="$other sets $(scan "$other" | sed -n 's/^set //p' | head -n 1) before $name"
                target=; break
            fi
        done
    fi
    [ -n "$target" ] || [ -n "$why_main" ] || why_main="$conf includes no sshd_config.d where $name would be read"
fi

if [ -n "$target" ]; then
    file=$target
    old=$conf.sop-console.old
    merged=$( { [ -f "$file" ] && cat "$file"; } | merge)
    new=$file.sop-console.new
    { printf '%s\n' "# sop-console: lines for reverse tunnels, read before $conf's own (sshd takes the first value)"
      printf '%s\n' "$merged"; } > "$new" || { rm -f "$new"; say "cannot write $new"; exit 1; }
else
    file=$conf
    old=$backup
    merged=$(awk -v b="^@BEGIN@" -v e="^@END@" '$0 ~ b { on = 1; next } $0 ~ e { on = 0; next } on' "$conf" | merge)
    new=$conf.sop-console.new
    cp -p "$conf" "$new" || { say "cannot write $new"; exit 1; }
    { printf '%s\n' "$begin" "$merged" "$end"
      awk -v b="^@BEGIN@" -v e="^@END@" '$0 ~ b { on = 1; next } $0 ~ e { on = 0; next } !on' "$conf"
    } > "$new" || { rm -f "$new"; say "cannot write $new"; exit 1; }
fi

if [ -f "$file" ] && cmp -s "$new" "$file"; then
    rm -f "$new"
    say "nothing to change: $file already has these lines"
    exit 0
fi
had=
if [ -f "$file" ]; then cp -p "$file" "$old" || { rm -f "$new"; say "cannot back up $file to $old"; exit 1; }; had=1; fi
mv -f "$new" "$file" || { rm -f "$new"; say "cannot replace $file"; exit 1; }
if ! out=$("$sshd" -t -f "$conf" 2>&1); then
    if [ -n "$had" ]; then cp -p "$old" "$file.sop-console.new" && mv -f "$file.sop-console.new" "$file"
    else rm -f "$file"; fi
    [ "$old" = "$backup" ] || rm -f "$old"
    say "sshd -t refused the change, $file is restored: $(first "$out")"
    exit 3
fi
[ "$old" = "$backup" ] || rm -f "$old"
written=$(printf '%s' "$lines" | tr '\n' ',' | sed 's/,/, /g')
if [ -n "$target" ]; then say "wrote $file: $written"
else say "put the lines at the top of $file (backup: $backup; $why_main): $written"; fi

is_sshd() { [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = sshd ]; }
sockets() { ls -l "/proc/$1/fd" 2>/dev/null | sed -n 's/.*socket:\[\([0-9]*\)\].*/\1/p' | sort | tr '\n' ' '; }
# SIGHUP makes sshd close its listening sockets and execute itself again: it has reloaded once it holds new ones
# (a connection made before that would still get the old settings).
hup() {
    is_sshd "$1" || return 1
    before=$(sockets "$1")
    kill -HUP "$1" || return 1
    tries=0
    while [ "$tries" -lt 100 ]; do
        now=$(sockets "$1")
        if [ -n "$now" ] && [ "$now" != "$before" ]; then return 0; fi
        sleep 0.05 2>/dev/null || sleep 1
        tries=$((tries + 1))
    done
    say "sent SIGHUP to sshd pid $1, but did not see it listen again"
}
if hup "$pid"; then say "reloaded sshd (SIGHUP to pid $pid)"; exit 0; fi
pidfile=$("$sshd" -T -f "$conf" 2>/dev/null | awk '$1 == "pidfile" { print $2; exit }')
running=
[ -n "$pidfile" ] && [ -r "$pidfile" ] && running=$(head -n 1 "$pidfile")
if hup "$running"; then say "reloaded sshd (SIGHUP to pid $running from $pidfile)"; exit 0; fi
if [ "$conf" = /etc/ssh/sshd_config ]; then    # the system's sshd: its service manager knows it
    for unit in ssh sshd; do
        if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$unit" 2>/dev/null \
                && systemctl reload "$unit" 2>/dev/null; then
            say "reloaded sshd (systemctl reload $unit)"; exit 0
        fi
        # (`service ... reload` alone says ok when nothing runs: ask its status first)
        if command -v service >/dev/null 2>&1 && service "$unit" status >/dev/null 2>&1 \
                && service "$unit" reload >/dev/null 2>&1; then
            say "reloaded sshd (service $unit reload)"; exit 0
        fi
    done
fi
say "$file is written and valid, but no running sshd was found to reload: reload sshd to apply it"
exit 4
)
"""


def fix_lines(settings: Iterable[SshdSetting]) -> list[str]:
    """The lines to write: those of every setting that needs a change, one per keyword (the first wins, as in
    sshd). Raises ValueError for a line that is not a plain `Keyword value...` (nothing else goes into a script
    that runs as root)."""
    lines: dict[str, str] = {}
    for setting in settings:
        if setting.state is not SshdSettingState.CHANGE:
            continue
        for line in setting.lines:
            if not _LINE.fullmatch(line):
                raise ValueError(f"not a plain sshd_config line: {line!r}")
            lines.setdefault(line.split()[0].lower(), line)
    return list(lines.values())


def sshd_fix_script(settings: list[SshdSetting], config_file: str, listener_pid: int | None) -> str:
    """The POSIX sh script that writes the lines of `settings` that need a change into `config_file`'s sshd
    configuration, validates it, and reloads sshd (see the module's docstring). Runs standalone as root.
    Raises ValueError when no setting needs a change or a line is not plain."""
    lines = fix_lines(settings)
    if not lines:
        raise ValueError("no setting needs a change")
    if not config_file.startswith("/"):
        raise ValueError(f"the config file must be an absolute path, got {config_file!r}")
    values = {
        "@CONF@": shlex.quote(config_file),
        "@PID@": shlex.quote(str(listener_pid) if listener_pid else ""),
        "@LINES@": shlex.quote("\n".join(lines)),
        "@KEYS@": shlex.quote(" ".join(line.split()[0].lower() for line in lines)),
        "@NAME@": DROPIN_NAME,
        "@BACKUP@": BACKUP_SUFFIX,
        "@BEGIN@": BEGIN,
        "@END@": END,
    }
    return re.sub("|".join(re.escape(k) for k in values), lambda m: values[m.group(0)], _SCRIPT)
