"""Watching jobs cheaply: bounded log tails and rule detectors that name what went wrong."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
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


def follow(
    path: Path, done: Callable[[], bool], sleep: Callable[[float], None], every: float = 0.5
) -> Iterator[str]:
    """What is appended to a log from its current end, until done() says the writer has ended."""
    offset = path.stat().st_size if path.exists() else 0
    while True:
        finished = done()  # asked before reading, so the last lines written are not missed
        try:
            with path.open("rb") as fh:
                fh.seek(offset)
                data = fh.read(1 << 20)
        except FileNotFoundError:
            data = b""
        offset += len(data)
        if data:
            yield data.decode("utf-8", errors="replace")
        elif finished:
            return
        else:
            sleep(every)


def diagnose(log_tail: str) -> str | None:
    """The first rule that fires on a log tail, with the offending line when there is one."""
    for name, pattern in _RULES:
        if pattern.search(log_tail):
            return name
    if "Traceback (most recent call last)" in log_tail:
        errors = _TRACEBACK_LAST.findall(log_tail)
        return f"traceback: {errors[-1][0][:200]}" if errors else "traceback"
    return None


@dataclass
class Observation:
    """What one poll saw of a running trial: its bounded tail and a rule that newly fired."""

    tail: str
    rule: str | None
    size: int


@dataclass
class _Seen:
    size: int = -1
    grew_at: float = 0.0
    fired: set[str] = field(default_factory=set)


@dataclass
class Monitor:
    """Reads at most `tail_bytes` of each running log per poll, whatever the log's size.

    Rules fire once per trial: NaN/inf loss, traceback, out of memory, and no output for
    `stall_s` seconds. `bytes_read` counts what was read, so the bound can be measured.
    """

    tail_bytes: int = TAIL_BYTES
    stall_s: float = 600.0
    clock: Callable[[], float] = time.time
    bytes_read: int = 0
    looks: int = 0
    max_read: int = 0  # the most read in one look: bounded by tail_bytes however large the log
    _seen: dict[str, _Seen] = field(default_factory=dict)

    def look(self, trial_id: str, log: Path) -> Observation:
        now = self.clock()
        seen = self._seen.setdefault(trial_id, _Seen(grew_at=now))
        try:
            size = log.stat().st_size
        except FileNotFoundError:
            size = 0
        if size != seen.size:
            seen.size, seen.grew_at = size, now
        text = tail(log, self.tail_bytes)
        read = len(text.encode("utf-8", errors="replace"))
        self.bytes_read += read
        self.looks += 1
        self.max_read = max(self.max_read, read)
        rule = diagnose(text)
        if rule is None and now - seen.grew_at >= self.stall_s:
            rule = f"stalled: no log output for {(now - seen.grew_at) / 60:.0f} min"
        if rule is not None:
            key = rule.split(":", 1)[0]
            if key in seen.fired:
                rule = None
            else:
                seen.fired.add(key)
        return Observation(text, rule, size)

    def forget(self, trial_id: str) -> None:
        self._seen.pop(trial_id, None)
