"""Multi-fidelity: which screened hypotheses go on to the full budget, and what screening saved."""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from . import cost
from .evidence import improvement
from .trial import Trial, TrialKind

if TYPE_CHECKING:
    from .spec import TaskSpec


@dataclass(frozen=True)
class Promotion:
    promoted: list[Trial]
    reasons: dict[str, str]  # trial id -> why it was or was not promoted


def choose(
    members: list[Trial], incumbent_screen: list[float], spec: TaskSpec, keep: int | None = None
) -> Promotion:
    """The best `keep` (default `promote`) of a round's measured screen trials; with promote_when =
    "better", only those beating the incumbent's score at their steps (all of the best when the
    incumbent has none there)."""
    keep = spec.fidelity.promote if keep is None else keep
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
        if len(promoted) < keep and (beats or spec.fidelity.promote_when == "top"):
            promoted.append(trial)
            reasons[trial.id] = f"promoted: rank {rank} of {len(ranked)} in its round ({against})"
        elif not beats:
            reasons[trial.id] = f"screened out: {trial.metric:.6g} does not beat the {against}"
        else:
            reasons[trial.id] = f"screened out: rank {rank} of {len(ranked)}, {keep} promoted"
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
    full-budget jobs cost what they did; screen runs (and a halving ladder's middle rungs) cost
    nothing at full budget."""
    full_jobs = [t for t in trials if t.fidelity != "screen" and t.elapsed is not None]
    mean_gpu = statistics.fmean(t.gpu_seconds or 0.0 for t in full_jobs) if full_jobs else None
    mean_slot = statistics.fmean(t.elapsed or 0.0 for t in full_jobs) if full_jobs else None
    scale = full_steps / screen_steps if screen_steps else 1.0
    # hypotheses that reached the full budget: their promotion is counted, not them
    promoted = {t.of for t in trials if t.kind is TrialKind.PROMOTE and t.fidelity != "screen"}
    gpu = slot = full_gpu = full_slot = 0.0
    for t in trials:
        g, s = (t.gpu_seconds or 0.0), (t.elapsed or 0.0)
        gpu, slot = gpu + g, slot + s
        if t.fidelity != "screen":
            full_gpu, full_slot = full_gpu + g, full_slot + s
        elif t.kind is TrialKind.HYPOTHESIS and t.id not in promoted:
            full_gpu += mean_gpu if mean_gpu is not None else g * scale
            full_slot += mean_slot if mean_slot is not None else s * scale
    return Savings(gpu / 3600, full_gpu / 3600, slot / 3600, full_slot / 3600)


@dataclass(frozen=True)
class Plan:
    """How the run screens its hypotheses: the task's own with `screen_steps = N`; with `auto`,
    decided once from the cost model fitted on the baseline's first array, and kept in the
    ledger's meta (`fidelity_plan`) so that a resumed run keeps it."""

    screen: bool
    screen_steps: int
    halving: bool = False
    offset: int = 0  # hypotheses planned before it was decided (at full budget): rounds count after them
    why: str = ""  # what the log and the reports say about the decision
    model: dict[str, Any] | None = None  # cost.Model.to_dict() it was decided on
    predicted: float | None = None  # share of seconds per hypothesis it was predicted to save

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plan:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def next_rung(spec: TaskSpec, runs: int, steps: int, halving: bool) -> cost.Rung:
    """Where the best of `runs` measured jobs of a round at `steps` go on (cost.next_rung)."""
    return cost.next_rung(runs, steps, spec.full_steps, spec.fidelity.promote, halving)


def plan_in_force(spec: TaskSpec, meta: dict[str, Any]) -> Plan | None:
    """The task's plan, the auto plan the ledger holds, or None while auto waits to measure."""
    rule = spec.fidelity
    if not spec.screening:
        return Plan(False, 0)
    if not rule.auto:
        return Plan(True, rule.screen_steps, rule.halving)
    stored = meta.get("fidelity_plan")
    return Plan.from_dict(stored) if isinstance(stored, dict) else None


def choose_plan(spec: TaskSpec, trials: list[Trial], offset: int) -> Plan:
    """`auto`: the cost model fitted on every finished job (the baseline's seeds at the full budget
    and its run at screen_steps, at least), then the deepest ladder that saves at least min_saving
    of the seconds per hypothesis: successive halving where asked, else plain screening. Cost
    alone would always prefer the plain screen, which drops as many hypotheses for fewer jobs;
    halving is asked for its better ranking, and given up only where it would not pay."""
    rule = spec.fidelity
    points, unit = cost.observed(trials, spec.budget.steps)
    model = cost.fit(points, unit)
    full = spec.full_steps
    if model is None:
        why = (
            f"screening is off: the cost per step could not be measured (no finished jobs at both "
            f"{rule.screen_steps} and {full} steps); every hypothesis runs at {full} steps"
        )
        return Plan(False, rule.screen_steps, False, offset, why)
    found: cost.Saving | None = None
    for halving in (True, False) if rule.halving else (False,):
        rungs = cost.ladder(full, rule.screen_steps, rule.round_size, rule.promote, halving)
        if halving and len(rungs) == 2:
            continue  # no middle rung fits: the plain screen
        found = cost.saving(model, rungs)
        if found.fraction >= rule.min_saving:
            why = f"{model.describe()}: {found.describe()}; screening is on"
            return Plan(True, rule.screen_steps, halving, offset, why, model.to_dict(), found.fraction)
    assert found is not None
    pays = f"it saves only below {found.break_even:.3g} s of start-up" if found.break_even > 0 else ""
    why = (
        f"{model.describe()}: {found.describe()}, under min_saving {rule.min_saving:.0%}"
        + (f" ({pays})" if pays else "")
        + f"; screening is off, every hypothesis runs at {full} steps"
    )
    return Plan(False, rule.screen_steps, False, offset, why, model.to_dict(), found.fraction)
