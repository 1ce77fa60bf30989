"""Outcome: what a finished job produced. Failed, timed-out or cancelled jobs are outcomes, not errors."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any


class JobState(StrEnum):
    COMPLETED = "completed"  # the command and the evaluation exited 0
    FAILED = "failed"  # non-zero exit, frozen file touched, or the runner saw a broken job
    TIMEOUT = "timeout"  # wall-clock limit
    CANCELLED = "cancelled"  # ara stop --cancel, Ctrl-C, scancel
    OOM = "oom"
    NODE_FAIL = "node_fail"  # the node (or its boot) failed under the job
    PREEMPTED = "preempted"
    LOST = "lost"  # the job ended without writing outcome.json, or vanished from the scheduler
    TAMPERED = "tampered"  # the trial changed a frozen file or wrote its own metrics: void
    STOPPED = "stopped"  # cancelled early: its curve trailed the incumbent's at the same step

    def is_infrastructure(self) -> bool:
        """Failures of the machinery, not of the trial's code: worth a retry."""
        return self in (JobState.LOST, JobState.NODE_FAIL, JobState.PREEMPTED)


@dataclass
class Outcome:
    state: JobState
    exit_code: int | None = None
    metric: float | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    elapsed: float = 0.0
    gpu_seconds: float = 0.0
    memory_gb: float | None = None
    reason: str = ""
    log_tail: str = ""
    frozen_changed: list[str] = field(default_factory=list)
    node: str = ""
    started_at: float | None = None  # wall clock, Unix seconds
    ended_at: float | None = None
    holdout: dict[str, Any] = field(default_factory=dict)  # the holdout evaluation's metrics
    sandbox: str = ""  # "bwrap" or "none": how the trial's code was contained ("" before it ran)

    @property
    def has_metric(self) -> bool:
        return self.metric is not None and math.isfinite(self.metric)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["state"] = str(self.state)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Outcome:
        data = dict(data)
        data["state"] = JobState(data["state"])
        known = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def read(cls, path: Path, *, missing_state: JobState, missing_reason: str, log_tail: str = "") -> Outcome:
        """The job's outcome.json; a missing or unreadable file is itself an outcome."""
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            return cls(state=missing_state, reason=missing_reason, log_tail=log_tail)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            return cls(state=JobState.LOST, reason=f"unreadable {path.name}: {exc}", log_tail=log_tail)
