"""A trial's lifecycle: its legal steps from state to state, and the one writer of them to the ledger.

Every change of a trial's row goes through a method of `Trials`, named for the step it records.
Each checks the step against the trial's state in the ledger (not a copy in memory, which may be
stale) and raises `IllegalStep` otherwise, so "what may follow WAITING?" has one answer: `STEPS`.
DESIGN.md's state diagram is `diagram()`'s output, and a test keeps the two the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .hypothesis import Hypothesis
from .ledger import Ledger
from .outcome import Outcome
from .trial import Decision, Trial, TrialKind, TrialState

PLANNED, SUBMITTING, QUEUED, RUNNING, WAITING, DONE = (
    TrialState.PLANNED,
    TrialState.SUBMITTING,
    TrialState.QUEUED,
    TrialState.RUNNING,
    TrialState.WAITING,
    TrialState.DONE,
)
LIVE = frozenset({SUBMITTING, QUEUED, RUNNING})


class IllegalStep(RuntimeError):
    """A step asked of a trial in a state it may not follow: a bug in ara, never the trial's."""


@dataclass(frozen=True)
class Step:
    name: str  # also the event recorded with it
    sources: frozenset[TrialState]
    target: TrialState | None  # None: the state stays as it was
    why: str


STEPS: dict[str, Step] = {
    s.name: s
    for s in (
        Step("materialized", frozenset({PLANNED}), None, "its commit and job file are made"),
        Step("rebased", frozenset({PLANNED}), None, "its edits did not apply: built on an older incumbent"),
        Step("rejected", frozenset({PLANNED}), DONE, "its edits could not become a commit"),
        # Again from a live state: a retry after the machinery failed, or a job lost on resume.
        Step("submitting", frozenset({PLANNED}) | LIVE, SUBMITTING, "handed to the executor"),
        Step("submitted", frozenset({SUBMITTING}), QUEUED, "the executor gave it a job id"),
        Step("found", LIVE, QUEUED, "on resume, its job was found running"),
        Step("pending", LIVE, None, "the scheduler says why it has not started"),
        Step("started", LIVE, RUNNING, "its job runs"),
        Step("cancelled-by-user", LIVE, PLANNED, "`ara stop --cancel`: it runs again on resume"),
        Step("measured", LIVE, WAITING, "its job ended; the outcome is recorded"),
        Step("decided", frozenset({WAITING}), DONE, "keep, discard, crash, repeat or promoted"),
    )
}


def diagram() -> str:
    """The lifecycle as a Mermaid state diagram, generated from STEPS (DESIGN.md holds a copy)."""
    lines = ["stateDiagram-v2", "    [*] --> planned: planned"]
    for step in STEPS.values():
        for source in sorted(step.sources, key=list(TrialState).index):
            target = step.target or source
            lines.append(f"    {source} --> {target}: {step.name}")
    lines.append("    done --> [*]")
    return "\n".join(lines)


class Trials:
    """The only writer of trial rows: one typed method per step of a trial's lifecycle."""

    def __init__(self, ledger: Ledger, clock: Callable[[], float]) -> None:
        self.ledger = ledger
        self.clock = clock

    def _step(self, trial: Trial, name: str, detail: str | None = None, **fields: Any) -> Trial:
        step = STEPS[name]
        state = self.ledger.state_of(trial.id)
        if state not in step.sources:
            raise IllegalStep(
                f"{trial.id}: `{name}` may follow {', '.join(sorted(step.sources))}, not {state}"
            )
        if step.target is not None:
            fields["state"] = step.target
        return self.ledger._write(trial, self.clock(), name, detail, fields)

    # -- before the job -----------------------------------------------------------------------
    def planned(
        self,
        hypothesis: Hypothesis,
        *,
        parent: str,
        parent_trial: str | None,
        kind: TrialKind = TrialKind.HYPOTHESIS,
        of: str | None = None,
        commit: str | None = None,
        seed: int = 0,
        steps: int | None = None,
        fidelity: str = "full",
        round: int = 0,
    ) -> Trial:
        """A new row, PLANNED: a hypothesis, a re-run of a commit, a promotion or a combination."""
        return self.ledger.add_trial(
            hypothesis,
            parent=parent,
            parent_trial=parent_trial,
            now=self.clock(),
            kind=kind,
            of=of,
            commit=commit,
            seed=seed,
            steps=steps,
            fidelity=fidelity,
            round=round,
        )

    def materialized(self, trial: Trial, commit: str) -> Trial:
        return self._step(trial, "materialized", commit=commit)

    def rebased(self, trial: Trial, onto: Trial, why: str) -> Trial:
        return self._step(trial, "rebased", why, parent=onto.commit, parent_trial=onto.id)

    def rejected(self, trial: Trial, reason: str) -> Trial:
        now = self.clock()
        return self._step(
            trial,
            "rejected",
            decision=Decision.REJECTED,
            reason=reason,
            decided_at=now,
            learning=f"{trial.title}: rejected ({reason})",
        )

    # -- the job ------------------------------------------------------------------------------
    def submitting(self, trial: Trial) -> Trial:
        """Recorded before the executor is called: a controller that dies inside sbatch finds the
        job on resume."""
        return self._step(trial, "submitting", attempts=trial.attempts + 1, submitted_at=self.clock())

    def submitted(self, trial: Trial, job_id: str) -> Trial:
        return self._step(trial, "submitted", job_id=job_id)

    def found(self, trial: Trial, job_id: str) -> Trial:
        return self._step(trial, "found", job_id=job_id)

    def pending(self, trial: Trial, note: str) -> Trial:
        return self._step(trial, "pending", pending_reason=note)

    def started(self, trial: Trial, job_id: str) -> Trial:
        return self._step(trial, "started", job_id=job_id, started_at=self.clock(), pending_reason="")

    def cancelled_by_user(self, trial: Trial) -> Trial:
        reason = "cancelled by `ara stop --cancel`; runs again when the run resumes"
        return self._step(trial, "cancelled-by-user", job_id=None, job_state=None, reason=reason)

    def measured(self, trial: Trial, outcome: Outcome, metric_name: str) -> Trial:
        """The job's outcome on the row; the trial waits for its decision."""
        return self._step(
            trial,
            "measured",
            reason=outcome.reason,
            metric=outcome.metric if outcome.has_metric else None,
            metrics=outcome.metrics,
            holdout=outcome.holdout.get(metric_name),
            job_state=str(outcome.state),
            elapsed=outcome.elapsed,
            gpu_seconds=outcome.gpu_seconds,
            memory_gb=outcome.memory_gb,
            node=outcome.node or None,
            job_started_at=outcome.started_at,
            job_ended_at=outcome.ended_at,
            finished_at=self.clock(),
        )

    # -- after the job ------------------------------------------------------------------------
    def decided(
        self,
        trial: Trial,
        decision: Decision,
        reason: str,
        *,
        evidence: dict[str, Any] | None,
        learning: str,
        summary: str,
    ) -> Trial:
        return self._step(
            trial,
            "decided",
            decision=decision,
            reason=reason,
            evidence=evidence,
            decided_at=self.clock(),
            learning=learning,
            summary=summary,
        )
