"""Exports of the ledger for notebooks: one row per trial, the status document's trial fields."""

from __future__ import annotations

import csv
import io
import json
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..ledger import Ledger
from .status import trial_fields

FORMATS = ("csv", "jsonl")
PARAM = "param."  # the column prefix of a searched parameter: `param.lr`, `param.optim.lr`


def space_keys(task_copy: Path) -> list[str]:
    """The `[search.space]` keys of the run's task copy, in order (plain TOML: no task spec)."""
    try:
        data = tomllib.loads(task_copy.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return []
    space = data.get("search", {}).get("space", {})
    return list(space) if isinstance(space, dict) else []


def rows(ledger: Ledger, space: list[str] | None = None) -> Iterator[dict[str, Any]]:
    """Each trial's fields, then one `param.<key>` per searched parameter (and any other key a
    planner recorded): the values its hypothesis set, a re-run's those of the trial it re-runs,
    empty where the change was not a recorded config change (code edits, combinations)."""
    params = ledger.params()
    keys = list(space or [])
    keys += sorted({k for p in params.values() for k in p} - set(keys))
    for trial in ledger.trials(light=True):
        values = params.get(trial.id) or params.get(trial.of or "") or {}
        yield {**trial_fields(trial), **{PARAM + k: values.get(k) for k in keys}}


def export(ledger: Ledger, fmt: str, space: list[str] | None = None) -> Iterator[str]:
    """The trials as CSV (nested values as JSON text) or JSON lines, a chunk at a time."""
    if fmt == "jsonl":
        for row in rows(ledger, space):
            yield json.dumps(row) + "\n"
        return
    buffer = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for row in rows(ledger, space):
        flat = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()}
        if writer is None:
            writer = csv.DictWriter(buffer, fieldnames=list(flat), lineterminator="\n")
            writer.writeheader()
        writer.writerow(flat)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
