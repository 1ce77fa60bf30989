"""Exports of the ledger for notebooks: one row per trial, the status document's trial fields."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from typing import Any

from .ledger import Ledger
from .status import trial_fields

FORMATS = ("csv", "jsonl")


def rows(ledger: Ledger) -> Iterator[dict[str, Any]]:
    for trial in ledger.trials(light=True):
        yield trial_fields(trial)


def export(ledger: Ledger, fmt: str) -> Iterator[str]:
    """The trials as CSV (nested values as JSON text) or JSON lines, a chunk at a time."""
    if fmt == "jsonl":
        for row in rows(ledger):
            yield json.dumps(row) + "\n"
        return
    buffer = io.StringIO()
    writer: csv.DictWriter[str] | None = None
    for row in rows(ledger):
        flat = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()}
        if writer is None:
            writer = csv.DictWriter(buffer, fieldnames=list(flat), lineterminator="\n")
            writer.writeheader()
        writer.writerow(flat)
        yield buffer.getvalue()
        buffer.seek(0)
        buffer.truncate()
