"""Job cost against its step budget: a fixed start-up plus a cost per step, and what screening saves."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .trial import Trial


@dataclass(frozen=True)
class Model:
    """Seconds a job costs: `fixed` whatever its steps (interpreter, imports, data, evaluation,
    the scheduler's own start-up) plus `per_step` for every step it trains."""

    fixed: float
    per_step: float
    jobs: int  # finished jobs it was fitted on
    budgets: tuple[int, ...]  # their distinct step budgets, at least two
    unit: str = "elapsed"  # "gpu_seconds" where the jobs had GPUs, else job wall time

    def seconds(self, steps: int) -> float:
        return self.fixed + self.per_step * steps

    def to_dict(self) -> dict[str, object]:
        return {
            "fixed": round(self.fixed, 4),
            "per_step": round(self.per_step, 8),
            "jobs": self.jobs,
            "budgets": list(self.budgets),
            "unit": self.unit,
        }

    def describe(self) -> str:
        budgets = " and ".join(str(b) for b in self.budgets)
        unit = "GPU-" if self.unit == "gpu_seconds" else ""
        return (
            f"start-up {self.fixed:.3g} {unit}s and {self.per_step:.3g} {unit}s per step "
            f"(fitted on {self.jobs} jobs at {budgets} steps)"
        )


def fit(points: Sequence[tuple[int, float]], unit: str = "elapsed") -> Model | None:
    """Least squares through (steps, seconds); None until two step budgets are measured. A negative
    slope or intercept is noise (jobs that share a node), so each is held at zero and the other
    refitted: a cost never falls with steps, and no job costs less than nothing."""
    budgets = tuple(sorted({s for s, _ in points}))
    if len(budgets) < 2:
        return None
    xs = [float(s) for s, _ in points]
    ys = [y for _, y in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum((x - mx) ** 2 for x in xs)
    fixed = my - slope * mx
    if slope < 0:
        slope, fixed = 0.0, my
    elif fixed < 0:
        slope, fixed = sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs), 0.0
    return Model(fixed, slope, len(points), budgets, unit)


def observed(trials: Iterable[Trial], default_steps: int) -> tuple[list[tuple[int, float]], str]:
    """(steps, seconds) of every job that ran to a metric, and the unit: GPU-seconds when the
    jobs were charged any (Slurm with GPUs), else wall time. Failed jobs say nothing about steps."""
    done = [t for t in trials if t.metric is not None and t.elapsed is not None]
    gpu = any((t.gpu_seconds or 0.0) > 0 for t in done)
    unit = "gpu_seconds" if gpu else "elapsed"
    points = []
    for t in done:
        spent = t.gpu_seconds if gpu else t.elapsed
        if spent is not None and spent > 0:
            points.append((t.steps if t.steps is not None else default_steps, float(spent)))
    return points, unit


@dataclass(frozen=True)
class Rung:
    """One budget of a screening ladder: `runs` jobs of a round at `steps` steps."""

    steps: int
    runs: int


def next_rung(runs: int, steps: int, full_steps: int, promote: int, halving: bool) -> Rung:
    """Where the best of `runs` measured jobs at `steps` go on. With successive halving, the better
    half at twice the steps, while more than `promote` would go and that budget is below the full
    one; else (and always in plain screening) the best `promote` at the full budget."""
    if halving:
        half = max(promote, math.ceil(runs / 2))
        if half > promote and steps * 2 < full_steps:
            return Rung(steps * 2, half)
    return Rung(full_steps, min(promote, runs))


def ladder(
    full_steps: int, screen_steps: int, round_size: int, promote: int, halving: bool
) -> tuple[Rung, ...]:
    """The rungs a round of `round_size` screened hypotheses climbs when each rung passes on all
    it may: 8 at S/8, 4 at S/4, 2 at S/2, 1 at S with halving; 4 at s, 1 at S without."""
    rungs = [Rung(screen_steps, round_size)]
    while rungs[-1].steps < full_steps:
        rungs.append(next_rung(rungs[-1].runs, rungs[-1].steps, full_steps, promote, halving))
    return tuple(rungs)


@dataclass(frozen=True)
class Saving:
    """Predicted cost of one hypothesis at the full budget, and through a screening ladder."""

    full: float  # seconds per hypothesis, every one at the full budget
    screened: float  # seconds per hypothesis through the ladder (its round's jobs, shared)
    rungs: tuple[Rung, ...]
    break_even: float  # the start-up cost below which this ladder saves anything

    @property
    def fraction(self) -> float:
        """Share of the full budget's seconds saved; negative when screening costs more."""
        return 1.0 - self.screened / self.full if self.full > 0 else 0.0

    def describe(self) -> str:
        steps = " -> ".join(f"{r.runs} at {r.steps}" for r in self.rungs)
        verdict = f"saves {self.fraction:.0%}" if self.fraction > 0 else f"costs {-self.fraction:.0%} more"
        return (
            f"screening ({steps} steps per round of {self.rungs[0].runs}) {verdict}: "
            f"{self.screened:.3g} s per hypothesis against {self.full:.3g} s at the full budget"
        )


def saving(model: Model, rungs: Sequence[Rung]) -> Saving:
    """Seconds per hypothesis through the ladder: over the rungs, the jobs a round runs at each,
    divided by the round's size; against one job at the last (full) rung's steps. It pays when
    fixed * (jobs - 1) < per_step * (S - steps), with jobs and steps per hypothesis: every job
    pays the start-up again, so the cheaper the start-up, the more screening saves."""
    size = rungs[0].runs
    full = model.seconds(rungs[-1].steps)
    screened = sum(r.runs * model.seconds(r.steps) for r in rungs) / size
    jobs = sum(r.runs for r in rungs) / size  # jobs per hypothesis, against 1
    steps = sum(r.runs * r.steps for r in rungs) / size  # steps per hypothesis, against S
    spared = model.per_step * (rungs[-1].steps - steps)
    break_even = spared / (jobs - 1) if jobs > 1 else math.inf
    return Saving(full, screened, tuple(rungs), max(break_even, 0.0))
