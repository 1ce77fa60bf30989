"""A job's metrics, read from the file the evaluation wrote or from what it printed.

The runner reads them on the job side, the probe from its short runs, and spec.py checks a
`[metric] pattern` with pattern_group when task.toml is read.
"""

from __future__ import annotations

import contextlib
import json
import re
from pathlib import Path

_BLOCK_LINE = re.compile(r"^\s*([A-Za-z_][\w./-]*)\s*:\s*(\S+)\s*$")


def pattern_group(pattern: str) -> str | int:
    """The group of a `[metric] pattern` that holds the number; ValueError says what is wrong."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{pattern!r} is not a regular expression: {exc}") from None
    if "value" in compiled.groupindex:
        return "value"
    if compiled.groups != 1:
        raise ValueError(
            f"{pattern!r} has {compiled.groups} groups; it needs one around the number, "
            "e.g. 'val_acc=([0-9.]+)', or one named value: (?P<value>...)"
        )
    return 1


def parse_metrics_block(text: str) -> dict[str, float]:
    """autoresearch's convention: the last `---` line, then `key: value` lines."""
    lines = text.splitlines()
    starts = [i for i, line in enumerate(lines) if line.strip() == "---"]
    if not starts:
        return {}
    metrics: dict[str, float] = {}
    for line in lines[starts[-1] + 1 :]:
        m = _BLOCK_LINE.match(line)
        if not m:
            continue
        try:
            metrics[m.group(1)] = float(m.group(2))
        except ValueError:
            continue
    return metrics


def pattern_metric(text: str, pattern: str) -> float | None:
    """The number in the last match of a `[metric] pattern` (ara's own `[ara]` lines aside)."""
    compiled, group = re.compile(pattern), pattern_group(pattern)
    found = None
    for line in text.splitlines():
        if line.startswith("[ara] "):
            continue
        for match in compiled.finditer(line):
            with contextlib.suppress(TypeError, ValueError):
                found = float(match.group(group))
    return found


def read_metrics(
    metrics_path: Path, output: str, metric: str = "", pattern: str | None = None
) -> dict[str, float]:
    """Metrics from ARA_METRICS_PATH when written, else from the stdout block; with a `[metric]
    pattern`, its last match in the output is `metric`."""
    try:
        data = json.loads(metrics_path.read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        data = None
    if isinstance(data, dict):
        found = {
            k: float(v) for k, v in data.items() if isinstance(v, int | float) and not isinstance(v, bool)
        }
    else:
        found = parse_metrics_block(output)
    value = pattern_metric(output, pattern) if pattern else None
    if value is not None:
        found[metric] = value
    return found
