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
    WAITING = "waiting"  # its job is done; the decision waits for more evidence (repeats, its round)
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
    REPEAT = "repeat"  # a re-run whose value is evidence for another trial's decision
    PROMOTED = "promoted"  # screened at the short budget and re-run at the full one

    def is_failure(self) -> bool:
        return self in (Decision.CRASH, Decision.REJECTED)


class TrialKind(StrEnum):
    """Why a row exists. Baseline and planned hypotheses count against budget.trials; a combination
    follows from two keeps, so it does not; the others re-run a commit as evidence."""

    BASELINE = "baseline"
    HYPOTHESIS = "hypothesis"
    COMBINE = "combine"  # the merge of two changes that each improved on the same parent
    REPEAT = "repeat"  # same commit and steps, another seed: noise estimate and confirmations
    PROMOTE = "promote"  # a screened hypothesis at the full budget
    RERUN = "rerun"  # asked for with `ara rerun`

    def is_hypothesis(self) -> bool:
        return self in (TrialKind.BASELINE, TrialKind.HYPOTHESIS, TrialKind.COMBINE)

    def counts_against_budget(self) -> bool:
        return self in (TrialKind.BASELINE, TrialKind.HYPOTHESIS)

    def is_evidence(self) -> bool:
        return self in (TrialKind.REPEAT, TrialKind.RERUN)


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
    kind: TrialKind = TrialKind.HYPOTHESIS
    of: str | None = None  # repeat/rerun: the trial it is evidence for; promote: its screen trial
    seed: int = 0  # ARA_SEED
    steps: int | None = None  # ARA_STEPS; None: the task's budget.steps
    fidelity: str = "full"  # "screen" (multi-fidelity's short budget) or "full"
    round: int = 0  # the planning round that proposed it
    evidence: dict[str, Any] | None = None  # what the decision rested on: values, means, margin
    holdout: float | None = None  # the holdout evaluation's metric; never shown to the planner


def trial_id(seq: int) -> str:
    return f"T{seq:04d}"
