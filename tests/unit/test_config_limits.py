"""Hostile YAML costs `check` nothing: alias bombs, deep nesting, huge numbers and huge files are refused with
their line (exit 2), within a few seconds, by the real CLI in its own process."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from console.core.config import load_config, parse_config
from console.core.config_file import MAX_ALIAS_VALUES, MAX_CONFIG_BYTES
from console.core.config_form import form_from_config, read_raw, save_form
from console.core.errors import ConfigError

ROOT = Path(__file__).parents[2]


def alias_bomb(levels: int, width: int = 10) -> str:
    lines = ['l0: &l0 "lol"']
    for level in range(1, levels + 1):
        lines.append(f"l{level}: &l{level} [{', '.join([f'*l{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def check(tmp_path: Path, text: str) -> tuple[int, str, Path]:
    path = tmp_path / "console.yaml"
    path.write_text(text)
    try:
        done = subprocess.run([sys.executable, "-m", "console", "check", "--config", str(path),
                               "--state-dir", str(tmp_path / "state")],
                              cwd=ROOT, capture_output=True, text=True, timeout=20)
    except subprocess.TimeoutExpired:
        pytest.fail("check still running after 20 s")
    return done.returncode, done.stderr + done.stdout, path


@pytest.mark.parametrize("levels", [7, 9])
def test_alias_bomb_is_refused_at_its_line(tmp_path, levels):
    code, out, path = check(tmp_path, alias_bomb(levels))
    assert code == 2, out
    # l4 = 10 x l3 (1111 values each): the running total passes 10,000 on line 5
    assert out.splitlines()[0].startswith(f"{path}:5: aliases stand for more than {MAX_ALIAS_VALUES} values"), out
    assert "Traceback" not in out and "internal error" not in out


def test_lists_nested_5000_deep(tmp_path):
    code, out, path = check(tmp_path, "server: {host: h}\nunits: " + "[" * 5000 + "]" * 5000 + "\n")
    assert code == 2, out
    assert out.strip() == f"{path}:2: nested more than 32 levels deep"


def test_mappings_nested_deep_in_block_style(tmp_path):
    text = "".join("  " * i + f"k{i}:\n" for i in range(200))
    code, out, path = check(tmp_path, text)
    # the mapping on line 32 is the 32nd level; its key k31, a value, would be the 33rd
    assert (code, out.strip()) == (2, f"{path}:32: nested more than 32 levels deep")


def test_5000_digit_integer(tmp_path):
    code, out, path = check(tmp_path, "log:\n  max_bytes: " + "9" * 5000 + "\n")
    assert code == 2, out
    assert out.strip() == f"{path}:2: log.max_bytes: a number of 5000 digits is too long (at most 20)"


def test_a_file_over_1_mib_is_not_read(tmp_path):
    code, out, path = check(tmp_path, "# " + "x" * MAX_CONFIG_BYTES + "\nserver: {host: h}\n")
    assert code == 2, out
    assert out.startswith(f"{path}:1: the file is larger than 1 MiB ({MAX_CONFIG_BYTES + 21:,} bytes)"), out


def test_a_recursive_alias(tmp_path):
    code, out, path = check(tmp_path, "server: {host: h}\nunits: &u {master: *u}\n")
    assert code == 2, out
    assert out.strip() == f"{path}:2: alias *u is inside what &u names (a loop); write the values out"


def test_values_python_cannot_read_and_keys_that_are_lists(tmp_path):
    code, out, path = check(tmp_path, "server: {host: h, port: 2026-13-45}\n? [1, 2]\n: 3\n")
    assert code == 2, out
    assert out.splitlines() == [f"{path}:1: server.port: cannot read '2026-13-45': month must be in 1..12",
                                f"{path}:2: (top): a key must be a plain name, not a mapping or list"]


def test_aliases_through_a_nested_alias_cannot_pass_the_depth_bound():
    text = "a0: &a0 x\n" + "".join(f"a{i}: &a{i} [[[[[[[[[[*a{i - 1}]]]]]]]]]]\n" for i in range(1, 5))
    with pytest.raises(ConfigError) as err:
        parse_config(text, "c.yaml")
    assert err.value.problems == ["c.yaml:5: alias *a3 nests the file more than 32 levels deep"]


def test_ordinary_anchors_and_merge_keys_still_work():
    config = parse_config("units:\n  master:\n    server: &s {host: 203.0.113.7, port: 2222}\n"
                          "    forwards: [{name: ssh, remote_port: 10022, local: '127.0.0.1:22'}]\n"
                          "  clone:\n    server:\n      <<: *s\n      port: 2223\n"
                          "    forwards: [{name: ssh, remote_port: 10023, local: '127.0.0.1:22'}]\n")
    assert config.units["clone"].server.address == "203.0.113.7:2223"
    assert config.units["master"].server.address == "203.0.113.7:2222"


def test_the_config_form_reads_within_the_same_bounds(tmp_path):
    path = tmp_path / "console.yaml"
    path.write_text("server: {host: h}\n" + alias_bomb(9))
    with pytest.raises(ConfigError) as err:
        read_raw(path)
    assert err.value.problems[0].startswith(f"{path}:6: aliases stand for more than")
    path.write_text("server: {host: h}\nlog: {max_bytes: " + "1" * 5000 + "}\n")
    with pytest.raises(ConfigError) as err:
        read_raw(path)
    assert err.value.problems == [f"{path}:2: log.max_bytes: a number of 5000 digits is too long (at most 20)"]
    path.write_text("server: {host: h}\nunits: {master: {username: a}}\n")
    save_form(path, form_from_config(load_config(path)))  # an ordinary file still saves
