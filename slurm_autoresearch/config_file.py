"""Line-level edits of a TOML config file, so every configuration change is an ordinary diff."""

from __future__ import annotations

import re
from typing import Any

import tomli_w

from .hypothesis import line_matches

_HEADER = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")
_KEY_LINE = re.compile(r"^(?P<indent>\s*)(?P<key>[A-Za-z0-9_-]+|\"[^\"]*\")\s*=\s*(?P<rest>.*)$")


def lookup(config: dict[str, Any], dotted: str) -> Any | None:
    """Value of a dotted key (`model.lr`) in parsed TOML, or None."""
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def toml_literal(value: Any) -> str:
    return tomli_w.dumps({"v": value}).split("=", 1)[1].strip()


def _split_comment(rest: str) -> tuple[str, str]:
    """Split `value  # comment` outside of quotes."""
    quote = None
    for i, ch in enumerate(rest):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch == "#":
            return rest[:i].rstrip(), rest[i:]
    return rest.rstrip(), ""


def set_value(text: str, dotted: str, value: Any) -> tuple[str, str]:
    """The (search, replace) block that sets dotted key to value in TOML text.

    The key must be written as `key = value` on one line in its table. Raises ValueError otherwise.
    """
    table, _, key = dotted.rpartition(".")
    lines = text.splitlines(keepends=True)
    current, header_at = "", 0
    for i, line in enumerate(lines):
        header = _HEADER.match(line)
        if header:
            current, header_at = header.group(1).strip(), i
            continue
        m = _KEY_LINE.match(line.rstrip("\r\n"))
        if not m or current != table or m.group("key").strip('"') != key:
            continue
        old_value, comment = _split_comment(m.group("rest"))
        if old_value.startswith(("[", "{", '"""', "'''")) and not old_value.endswith(("]", "}")):
            raise ValueError(f"{dotted} spans several lines; write it on one line to search it")
        end = line[len(line.rstrip("\r\n")) :]
        new_line = f"{m.group('indent')}{m.group('key')} = {toml_literal(value)}"
        new_line += f"  {comment}" if comment else ""
        search, replace = line, new_line + end
        if len(line_matches(text, search)) > 1:  # widen to the table header so the block is unique
            search = "".join(lines[header_at : i + 1])
            replace = "".join(lines[header_at:i]) + new_line + end
        if len(line_matches(text, search)) != 1:
            raise ValueError(f"cannot find a unique line for {dotted}")
        return search, replace
    raise ValueError(f"no line `{key} = ...` in table [{table or 'top level'}]")
