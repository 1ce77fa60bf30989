"""Trial vocabulary: states with behaviour on the enum, decisions, and the trial record."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from .hypothesis import Hypothesis


class TrialState(StrEnum):
    PLANNED = "planned"  # in the ledger; a commit once materialized
    SUBMITTING = "submitting"  # handed to the executor, job id not yet known (find it on resume)
    QUEUED = "queued"  # the executor has it under a job id
    RUNNING = "running"
    DONE = "done"  # decided

    def is_finished(self) -> bool:
        return self is TrialState.DONE

    def is_live(self) -> bool:
        return self in (TrialState.SUBMITTING, TrialState.QUEUED, TrialState.RUNNING)


class Decision(StrEnum):
    KEEP = "keep"
    DISCARD = "discard"
    CRASH = "crash"
    REJECTED = "rejected"

    def is_failure(self) -> bool:
        return self in (Decision.CRASH, Decision.REJECTED)


@dataclass
class Trial:
    """One hypothesis tried: its commit, job, outcome and decision, as the ledger holds it."""

    id: str
    seq: int
    title: str
    source: str
    hypothesis: Hypothesis
    state: TrialState = TrialState.PLANNED
    parent: str | None = None
    parent_trial: str | None = None
    commit: str | None = None
    job_id: str | None = None
    job_state: str | None = None
    decision: Decision | None = None
    reason: str = ""
    metric: float | None = None
    metrics: dict[str, Any] | None = None
    elapsed: float | None = None
    gpu_seconds: float | None = None
    memory_gb: float | None = None
    learning: str = ""
    created_at: float = 0.0
    submitted_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    decided_at: float | None = None
    node: str | None = None
    job_started_at: float | None = None  # the job's own start and end (scheduler or runner clock)
    job_ended_at: float | None = None
    summary: str = ""  # the summarizer's paragraph
    llm_usd: float = 0.0  # model calls attributed to this trial (its share of planning, its summaries)
    llm_tokens: int = 0
    attempts: int = 0  # submissions so far; infrastructure failures are retried, crashes are not
    pending_reason: str = ""  # why the scheduler has not started it yet, while it waits


def trial_id(seq: int) -> str:
    return f"T{seq:04d}"
