"""Model-written text made safe to store and show: terminals, markdown, one-line fields."""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from typing import Any

# C0 and C1 controls, DEL, lone surrogates, and the invisible format characters (bidi overrides
# and isolates, zero-width marks, BOM, tags) that can reorder or hide what a reader sees.
_FORMAT = (
    "\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb"
    "\U000e0001\U000e0020-\U000e007f"
)
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f\ud800-\udfff{_FORMAT}]")
_SURROGATE = re.compile("[\ud800-\udfff]")


def _shown(m: re.Match[str]) -> str:
    code = ord(m.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def visible(text: str, keep: str = "\n\t") -> str:
    """Every control, surrogate and invisible format character as a visible escape (`\\x1b`,
    `\\u202e`), except those in `keep`: nothing in it can drive a terminal or hide a word."""
    return _UNSAFE.sub(lambda m: m.group() if m.group() in keep else _shown(m), text)


def one_line(text: str, limit: int | None = None) -> str:
    """Plain single-line text (playbook learnings, W&B notes, table cells)."""
    flat = visible(" ".join(text.split()), keep="")
    return flat if limit is None or len(flat) <= limit else flat[: limit - 1] + "…"


def error_line(exc: BaseException, limit: int = 300) -> str:
    """An exception as one line of a reason: its type and message (a message may quote a path or a
    model's text)."""
    return f"{type(exc).__name__}: {one_line(str(exc), limit) or '(no message)'}"


def storable(text: str) -> str:
    """Text any UTF-8 file or SQLite column takes: lone surrogates written as escapes, the rest
    kept as it was (a record of what the model said, shown through `visible` later)."""
    return _SURROGATE.sub(_shown, text)


def markdown(text: str, keep: str = "\n\t") -> str:
    """Model text inside report.md: visible, no raw HTML, no images (a remote image is a request
    to someone's server on every view), links shown as text."""
    text = html.escape(visible(text, keep), quote=False)
    return text.replace("![", "!\\[").replace("](", "]\\(")


def map_text(value: Any, fn: Callable[[str], str]) -> Any:
    """`fn` applied to every string in a JSON-like document (keys left alone)."""
    if isinstance(value, str):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_text(v, fn) for k, v in value.items()}
    if isinstance(value, list):
        return [map_text(v, fn) for v in value]
    return value
