"""Watching jobs cheaply: bounded log tails and rule detectors that name what went wrong."""

from __future__ import annotations

import re
from pathlib import Path

TAIL_BYTES = 4096

_RULES: list[tuple[str, re.Pattern[str]]] = [
    (
        "out of memory",
        re.compile(r"CUDA out of memory|OutOfMemoryError|MemoryError|oom-kill|Killed\s*$", re.M),
    ),
    ("loss is NaN or inf", re.compile(r"\bloss\b[^\n]*\b(nan|inf)\b|FAIL: loss is (nan|inf)", re.I)),
]
_TRACEBACK_LAST = re.compile(r"^(\w[\w.]*(Error|Exception|Interrupt)\b.*)$", re.M)


def tail(path: Path, limit: int = TAIL_BYTES) -> str:
    """The last `limit` bytes of a file, starting at a line boundary; never reads the whole file."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - limit))
            data = fh.read(limit)
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    if size > limit and "\n" in text:
        text = text.split("\n", 1)[1]
    return text


def diagnose(log_tail: str) -> str | None:
    """The first rule that fires on a log tail, with the offending line when there is one."""
    for name, pattern in _RULES:
        if pattern.search(log_tail):
            return name
    if "Traceback (most recent call last)" in log_tail:
        errors = _TRACEBACK_LAST.findall(log_tail)
        return f"traceback: {errors[-1][0][:200]}" if errors else "traceback"
    return None
