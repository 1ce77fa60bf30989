"""Evidence for a decision: runs of one commit at one step budget, the metric's spread, margins."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import TYPE_CHECKING, Any

from .trial import Decision, Trial, TrialState

if TYPE_CHECKING:  # the read side (ara status, watch) must not pay for pydantic
    from .spec import TaskSpec


def steps_of(trial: Trial, default_steps: int) -> int:
    """A trial's step budget; rows from before migration 5 ran at the task's budget.steps."""
    return trial.steps if trial.steps is not None else default_steps


def counts(trial: Trial) -> bool:
    """A finished, measured run: evidence for its commit at its step budget."""
    return (
        trial.metric is not None
        and trial.state in (TrialState.DONE, TrialState.WAITING)
        and trial.decision not in (Decision.CRASH, Decision.REJECTED)
    )


def values(trials: Iterable[Trial], commit: str | None, steps: int, default_steps: int) -> list[float]:
    """Every finished metric of this commit at this step budget (its seeds, confirmations, reruns)."""
    return [
        t.metric  # type: ignore[misc]
        for t in trials
        if commit and t.commit == commit and steps_of(t, default_steps) == steps and counts(t)
    ]


@dataclass(frozen=True)
class Noise:
    """The metric's run-to-run spread at one step budget, pooled over every repeated commit."""

    sigma: float | None  # None until some commit has two runs
    dof: int  # degrees of freedom of the pooled estimate
    groups: int  # commits with two or more runs

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def noise(trials: Iterable[Trial], steps: int, default_steps: int) -> Noise:
    groups: dict[str, list[float]] = defaultdict(list)
    for t in trials:
        if t.commit and steps_of(t, default_steps) == steps and counts(t):
            groups[t.commit].append(t.metric)  # type: ignore[arg-type]
    repeated = [g for g in groups.values() if len(g) >= 2]
    dof = sum(len(g) - 1 for g in repeated)
    if not dof:
        return Noise(None, 0, 0)
    pooled = sum(statistics.variance(g) * (len(g) - 1) for g in repeated) / dof
    return Noise(math.sqrt(pooled), dof, len(repeated))


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile by the Cornish-Fisher expansion (within 1% for dof >= 3 at p <= 0.995);
    the controller stays free of scipy."""
    z = NormalDist().inv_cdf(p)
    nu = max(dof, 1)
    return (
        z
        + (z**3 + z) / (4 * nu)
        + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * nu**2)
        + (3 * z**7 + 19 * z**5 + 17 * z**3 - 15 * z) / (384 * nu**3)
    )


@dataclass(frozen=True)
class Comparison:
    """A candidate's runs against the incumbent's, and the margin the improvement must pass."""

    candidate: list[float]
    incumbent: list[float]
    delta: float  # mean improvement, positive = better in the task's direction
    margin: float  # what delta must exceed to keep
    se: float | None  # standard error of delta (None without a noise estimate)
    sigma: float | None
    dof: int
    rule: str  # "noise" or "min_delta"

    @property
    def t(self) -> float | None:
        return self.delta / self.se if self.se else None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["candidate_mean"] = statistics.fmean(self.candidate)
        data["incumbent_mean"] = statistics.fmean(self.incumbent)
        return {k: (round(v, 8) if isinstance(v, float) else v) for k, v in data.items()}

    def describe(self) -> str:
        n_c, n_i = len(self.candidate), len(self.incumbent)
        means = (
            f"{statistics.fmean(self.candidate):.6g} (n={n_c}) vs {statistics.fmean(self.incumbent):.6g} "
            f"(n={n_i})"
        )
        return f"{means}, delta {self.delta:+.4g}, margin {self.margin:.4g} ({self.rule})"


def improvement(metric: float, incumbent: float, goal: str) -> float:
    return metric - incumbent if goal == "max" else incumbent - metric


def running_best(trials: Iterable[Trial], goal: str) -> list[tuple[int, float]]:
    """(seq, value) wherever the best kept metric so far improved: every chart's step line."""
    points: list[tuple[int, float]] = []
    for t in sorted(trials, key=lambda t: t.seq):
        if t.decision is not Decision.KEEP or t.metric is None or not math.isfinite(t.metric):
            continue
        if not points or improvement(t.metric, points[-1][1], goal) > 0:
            points.append((t.seq, t.metric))
    return points


def compare(candidate: list[float], incumbent: list[float], noise_: Noise, spec: TaskSpec) -> Comparison:
    goal = spec.metric.goal
    delta = improvement(statistics.fmean(candidate), statistics.fmean(incumbent), goal)
    floor = spec.metric.min_delta
    if spec.noise_rule and noise_.sigma is not None:
        se = noise_.sigma * math.sqrt(1 / len(candidate) + 1 / len(incumbent))
        margin = max(floor, t_quantile(1 - spec.decide.level, noise_.dof) * se)
        return Comparison(candidate, incumbent, delta, margin, se, noise_.sigma, noise_.dof, "noise")
    return Comparison(candidate, incumbent, delta, floor, None, noise_.sigma, noise_.dof, "min_delta")


@dataclass(frozen=True)
class Rule:
    """The task's decision settings in plain values, kept in the ledger's meta so that readers
    (status, watch, reports) need not load the task spec."""

    goal: str
    min_delta: float
    noise: bool  # the noise rule is in force (else min_delta)
    level: float
    confirm: int
    repeats: int
    steps: int  # budget.steps: the default of rows without steps
    full_steps: int
    screen_steps: int

    @classmethod
    def of(cls, spec: TaskSpec) -> Rule:
        return cls(
            goal=spec.metric.goal,
            min_delta=spec.metric.min_delta,
            noise=spec.noise_rule,
            level=spec.decide.level,
            confirm=spec.decide.confirm,
            repeats=spec.noise.repeats,
            steps=spec.budget.steps,
            full_steps=spec.full_steps,
            screen_steps=spec.fidelity.screen_steps,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overview(trials: list[Trial], rule: Rule, incumbent: Trial | None) -> dict[str, Any]:
    """The decision rule in numbers: the spread, and the margin one new run must beat."""
    steps = rule.full_steps
    spread = noise(trials, steps, rule.steps)
    runs = values(trials, incumbent.commit, steps, rule.steps) if incumbent else []
    margin: float | None = rule.min_delta
    noise_rule = rule.noise and spread.sigma is not None
    if noise_rule and runs:
        se = spread.sigma * math.sqrt(1 + 1 / len(runs))  # type: ignore[operator]
        margin = max(rule.min_delta, t_quantile(1 - rule.level, spread.dof) * se)
    elif noise_rule:
        margin = None
    return {
        "rule": "noise" if rule.noise else "min_delta",
        "level": rule.level if rule.noise else None,
        "min_delta": rule.min_delta,
        "confirm": rule.confirm,
        "repeats": rule.repeats,
        "steps": steps,
        **spread.to_dict(),
        "incumbent_runs": len(runs),
        "incumbent_mean": statistics.fmean(runs) if runs else None,
        "margin_one_run": margin,
    }


def describe(o: dict[str, Any]) -> str:
    """An overview in one line of words, for the terminal and both reports."""
    how = (
        f"noise rule, one-sided test at level {o['level']:g}, confirm {o['confirm']}"
        if o["rule"] == "noise"
        else f"min_delta {o['min_delta']:g}"
    )
    spread = (
        f"run-to-run sd {o['sigma']:.4g} (dof {o['dof']}, {o['groups']} repeated commits)"
        if o["sigma"] is not None
        else "spread unmeasured"
    )
    margin = o["margin_one_run"]
    need = f"; one new run must beat the best by {margin:.4g}" if margin is not None else ""
    return f"{how}; {spread} at {o['steps']} steps from {o['repeats']} baseline seed(s){need}"
