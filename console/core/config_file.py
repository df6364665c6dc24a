"""Reading a configuration file: bounded YAML, composed to values that remember their line.

Bounds on what a configuration file may be. A real one is a few KiB, 5 levels deep (units.master.forwards[0].name)
and uses an alias or two (`<<: *defaults`); hostile YAML (a "billion laughs" alias bomb, lists nested thousands
deep, a 5000-digit number) is refused with its line, exit 2, before it costs memory or time.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from console.core.errors import ConfigError

MAX_CONFIG_BYTES = 1 << 20     # 1 MiB: a larger file is not read at all
MAX_DEPTH = 32                 # mappings and lists inside each other, aliases expanded
MAX_ALIAS_VALUES = 10_000      # values all the aliases of a file stand for, once expanded
MAX_INT_DIGITS = 20            # the largest number a config takes (log.max_bytes, up to 2**40) has 13

_INT_TAG = "tag:yaml.org,2002:int"


class _Refused(Exception):
    def __init__(self, mark: yaml.Mark | None, message: str) -> None:
        super().__init__(message)
        self.line = mark.line + 1 if mark else 1
        self.message = message


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader's composer with the bounds above checked as each node is composed: composing is linear in
    the file, expanding aliases is not, so the expanded size and depth of every node are counted here
    (memoised per node) and checked before anything expands them."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0                          # collections open around the node being composed
        self._size: dict[int, int] = {}          # id(node) -> values it stands for, aliases expanded
        self._height: dict[int, int] = {}        # id(node) -> levels it spans, aliases expanded
        self._open_anchors: set[str] = set()     # anchors of collections still being composed
        self._aliased = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            if event.anchor in self._open_anchors:
                raise _Refused(event.start_mark, f"alias *{event.anchor} is inside what &{event.anchor} names "
                                                 "(a loop); write the values out")
            node = super().compose_node(parent, index)  # an undefined alias raises ComposerError here
            if self._depth + self._height.get(id(node), 1) > MAX_DEPTH:
                raise _Refused(event.start_mark, f"alias *{event.anchor} nests the file more than {MAX_DEPTH} "
                                                 "levels deep")
            self._aliased += self._size.get(id(node), 1)
            if self._aliased > MAX_ALIAS_VALUES:
                raise _Refused(event.start_mark, f"aliases stand for more than {MAX_ALIAS_VALUES} values "
                                                 f"(at *{event.anchor}; a YAML alias bomb?); write the values out")
            return node
        if self._depth >= MAX_DEPTH:
            raise _Refused(event.start_mark, f"nested more than {MAX_DEPTH} levels deep")
        anchor = getattr(event, "anchor", None)
        self._depth += 1
        if anchor is not None:
            self._open_anchors.add(anchor)
        try:
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
            self._open_anchors.discard(anchor)
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = []
        self._size[id(node)] = 1 + sum(self._size.get(id(c), 1) for c in children)
        self._height[id(node)] = 1 + max((self._height.get(id(c), 1) for c in children), default=0)
        return node


class _Located:
    """Plain Python values from YAML nodes, plus the line each path came from."""

    def __init__(self) -> None:
        self.lines: dict[str, int] = {}
        self.duplicates: list[tuple[str, int]] = []
        self.unreadable: list[tuple[str, int, str]] = []   # (path, line, why): the value is taken as null

    def build(self, node: yaml.Node, path: str, loader: yaml.SafeLoader) -> Any:
        self.lines.setdefault(path, node.start_mark.line + 1)
        if isinstance(node, yaml.MappingNode):
            written = {id(key_node) for key_node, _ in node.value}
            loader.flatten_mapping(node)  # `<<: *defaults` merged in first, so the keys written here win
            result: dict[Any, Any] = {}
            written_keys: set[Any] = set()
            for key_node, value_node in node.value:
                line = key_node.start_mark.line + 1
                if not isinstance(key_node, yaml.ScalarNode):
                    self.unreadable.append((path or "(top)", line, "a key must be a plain name, not a mapping or list"))
                    continue
                key = self._scalar(key_node, path or "(top)", loader)
                child = f"{path}.{key}" if path else str(key)
                self.lines[child] = line
                if id(key_node) in written:
                    if key in written_keys:
                        self.duplicates.append((child, line))
                    written_keys.add(key)
                result[key] = self.build(value_node, child, loader)
                self.lines[child] = line
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, f"{path}[{i}]", loader) for i, item in enumerate(node.value)]
        return self._scalar(node, path, loader)

    def _scalar(self, node: yaml.Node, path: str, loader: yaml.SafeLoader) -> Any:
        if node.tag == _INT_TAG and isinstance(node.value, str):
            digits = sum(c.isalnum() for c in node.value)
            if digits > MAX_INT_DIGITS:
                self.unreadable.append((path, node.start_mark.line + 1,
                                        f"a number of {digits} digits is too long (at most {MAX_INT_DIGITS})"))
                return None
        try:
            return loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # 2026-13-45 read as a date, 0x... past Python's int limit
            shown = node.value if len(node.value) <= 40 else node.value[:37] + "..."
            self.unreadable.append((path, node.start_mark.line + 1, f"cannot read {shown!r}: {exc}"))
            return None


def compose(text: str, source: str) -> tuple[Any, dict[str, int], list[str]]:
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > MAX_CONFIG_BYTES:
        return None, {}, [f"{source}:1: {_too_large(size)}"]
    loader = _BoundedLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return {}, {}, []
        located = _Located()
        data = located.build(node, "", loader)
    except _Refused as exc:
        return None, {}, [f"{source}:{exc.line}: {exc.message}"]
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        reason = exc.problem or exc.context or "invalid YAML"
        return None, {}, [f"{source}:{line}: YAML syntax: {reason}"]
    except yaml.YAMLError as exc:
        return None, {}, [f"{source}:1: YAML syntax: {exc}"]
    finally:
        loader.dispose()
    found = [(line, f"{path}: duplicate key") for path, line in located.duplicates]
    found += [(line, f"{path}: {why}") for path, line, why in located.unreadable]
    return data, located.lines, [f"{source}:{line}: {text}" for line, text in sorted(found, key=lambda p: p[0])]


def _too_large(size: int) -> str:
    return (f"the file is larger than {MAX_CONFIG_BYTES / (1 << 20):g} MiB ({size:,} bytes); "
            "a configuration is a few KiB: is this the right file?")


def read_config_text(path: Path, name: str | None = None) -> str:
    """A config file's text, read no further than MAX_CONFIG_BYTES (a FIFO or /dev/zero included): ConfigError
    when it is larger; FileNotFoundError, other OSErrors and UnicodeDecodeError pass through."""
    with open(path, "rb") as handle:
        raw = handle.read(MAX_CONFIG_BYTES + 1)
    if len(raw) > MAX_CONFIG_BYTES:
        try:
            size = max(os.stat(path).st_size, len(raw))
        except OSError:
            size = len(raw)
        raise ConfigError([f"{name or path}:1: {_too_large(size)}"])
    return raw.decode("utf-8")


def load_yaml(text: str, source: str) -> Any:
    """Plain data from YAML text within the bounds above, for code that edits the file (the config form):
    ConfigError on a syntax error, a bound passed or a value that cannot be read. Duplicate keys pass
    (the last one wins, as in yaml.safe_load)."""
    data, _, problems = compose(text, source)
    if data is None:
        raise ConfigError(problems)
    unreadable = [p for p in problems if not p.endswith(": duplicate key")]
    if unreadable:
        raise ConfigError(unreadable)
    return data


# --------------------------------------------------------------------------- validation
