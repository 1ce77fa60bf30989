"""Multi-fidelity: which screened hypotheses go on to the full budget, and what screening saved."""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .evidence import improvement
from .trial import Decision, Trial, TrialKind

if TYPE_CHECKING:
    from .spec import TaskSpec


@dataclass(frozen=True)
class Promotion:
    promoted: list[Trial]
    reasons: dict[str, str]  # trial id -> why it was or was not promoted


def choose(members: list[Trial], incumbent_screen: list[float], spec: TaskSpec) -> Promotion:
    """The best `promote` of a round's measured screen trials; with promote_when = "better", only
    those beating the incumbent's screen score (all of the best when the incumbent has none)."""
    goal = spec.metric.goal
    measured = [t for t in members if t.metric is not None]

    def best_first(trial: Trial) -> float:
        assert trial.metric is not None  # measured only
        return trial.metric if goal == "min" else -trial.metric

    ranked = sorted(measured, key=best_first)
    bar = statistics.fmean(incumbent_screen) if incumbent_screen else None
    promoted: list[Trial] = []
    reasons: dict[str, str] = {}
    for rank, trial in enumerate(ranked, start=1):
        assert trial.metric is not None
        beats = bar is None or improvement(trial.metric, bar, goal) > 0
        against = f"incumbent's screen {bar:.6g}" if bar is not None else "no incumbent screen score"
        if len(promoted) < spec.fidelity.promote and (beats or spec.fidelity.promote_when == "top"):
            promoted.append(trial)
            reasons[trial.id] = f"promoted: rank {rank} of {len(ranked)} in its round ({against})"
        elif not beats:
            reasons[trial.id] = f"screened out: {trial.metric:.6g} does not beat the {against}"
        else:
            kept = spec.fidelity.promote
            reasons[trial.id] = f"screened out: rank {rank} of {len(ranked)}, {kept} promoted"
    return Promotion(promoted, reasons)


@dataclass(frozen=True)
class Savings:
    """Resources spent against the same hypotheses run at the full budget only."""

    gpu_hours: float
    full_budget_gpu_hours: float
    slot_hours: float  # job wall time, for executors without GPUs
    full_budget_slot_hours: float

    @property
    def saved_gpu_hours(self) -> float:
        return self.full_budget_gpu_hours - self.gpu_hours

    def to_dict(self) -> dict[str, float]:
        return {
            "gpu_hours": round(self.gpu_hours, 6),
            "full_budget_gpu_hours": round(self.full_budget_gpu_hours, 6),
            "saved_gpu_hours": round(self.saved_gpu_hours, 6),
            "slot_hours": round(self.slot_hours, 6),
            "full_budget_slot_hours": round(self.full_budget_slot_hours, 6),
        }


def savings(trials: list[Trial], full_steps: int, screen_steps: int) -> Savings:
    """What the run spent, against the same hypotheses all run at the full budget: a screened-out
    hypothesis would have cost what this run's full-budget jobs cost on average (measured, since
    start-up makes cost far from linear in steps; scaled by steps until one is measured); the
    full-budget jobs cost what they did; screen runs cost nothing at full budget."""
    full_jobs = [t for t in trials if t.fidelity != "screen" and t.elapsed is not None]
    mean_gpu = statistics.fmean(t.gpu_seconds or 0.0 for t in full_jobs) if full_jobs else None
    mean_slot = statistics.fmean(t.elapsed or 0.0 for t in full_jobs) if full_jobs else None
    scale = full_steps / screen_steps if screen_steps else 1.0
    promoted = {t.of for t in trials if t.kind is TrialKind.PROMOTE}
    gpu = slot = full_gpu = full_slot = 0.0
    for t in trials:
        g, s = (t.gpu_seconds or 0.0), (t.elapsed or 0.0)
        gpu, slot = gpu + g, slot + s
        if t.fidelity != "screen":
            full_gpu, full_slot = full_gpu + g, full_slot + s
        elif t.kind is TrialKind.HYPOTHESIS and t.id not in promoted and t.decision is not Decision.PROMOTED:
            full_gpu += mean_gpu if mean_gpu is not None else g * scale
            full_slot += mean_slot if mean_slot is not None else s * scale
    return Savings(gpu / 3600, full_gpu / 3600, slot / 3600, full_slot / 3600)
