"""Evidence for a decision: runs of one commit at one step budget, the metric's spread, margins."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import asdict, dataclass
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
        t.metric
        for t in trials
        if t.metric is not None  # as counts() has it; said again for the type checker
        and commit
        and t.commit == commit
        and steps_of(t, default_steps) == steps
        and counts(t)
    ]


@dataclass(frozen=True)
class Noise:
    """The metric's run-to-run spread at one step budget, pooled over every repeated commit."""

    sigma: float | None  # None until some commit has two runs
    dof: int  # degrees of freedom of the pooled estimate
    groups: int  # commits with two or more runs

    @property
    def unmeasurable(self) -> bool:
        """Every repeat of every commit gave the very same metric: the code ignores ARA_SEED (or is
        deterministic), so repeats measure nothing and keeps can only be single-run."""
        return self.sigma == 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"unmeasurable": self.unmeasurable}


def noise(trials: Iterable[Trial], steps: int, default_steps: int) -> Noise:
    groups: dict[str, list[float]] = defaultdict(list)
    for t in trials:
        if t.metric is not None and t.commit and steps_of(t, default_steps) == steps and counts(t):
            groups[t.commit].append(t.metric)
    repeated = [g for g in groups.values() if len(g) >= 2]
    dof = sum(len(g) - 1 for g in repeated)
    if not dof:
        return Noise(None, 0, 0)
    pooled = sum(statistics.variance(g) * (len(g) - 1) for g in repeated) / dof
    return Noise(math.sqrt(pooled), dof, len(repeated))


def t_cdf(t: float, dof: int) -> float:
    """Student's t distribution function for whole degrees of freedom, in closed form
    (Abramowitz and Stegun 26.7.3-4): the controller stays free of scipy."""
    nu = max(dof, 1)
    theta = math.atan(abs(t) / math.sqrt(nu))
    c2, term, total = math.cos(theta) ** 2, 1.0, 0.0
    if nu % 2:  # odd: 2/pi (theta + sin cos (1 + 2/3 cos^2 + 2*4/(3*5) cos^4 + ...))
        if nu > 1:
            for k in range(1, (nu - 1) // 2 + 1):
                total += term
                term *= c2 * (2 * k) / (2 * k + 1)
            total *= math.sin(theta) * math.cos(theta)
        inside = 2 / math.pi * (theta + total)
    else:  # even: sin (1 + 1/2 cos^2 + 1*3/(2*4) cos^4 + ...)
        for k in range(1, nu // 2 + 1):
            total += term
            term *= c2 * (2 * k - 1) / (2 * k)
        inside = math.sin(theta) * total
    return 0.5 + math.copysign(inside / 2, t)


def t_quantile(p: float, dof: int) -> float:
    """Student's t quantile, exact to 1e-9 at any dof (bisection on `t_cdf`). The default three
    baseline seeds give 2 degrees of freedom, where expansions around the normal are 7% low."""
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1 - p, dof)
    low, high = 0.0, 1.0
    while t_cdf(high, dof) < p:
        high *= 2
    while high - low > 1e-9 * max(1.0, high):
        mid = (low + high) / 2
        low, high = (mid, high) if t_cdf(mid, dof) < p else (low, mid)
    return (low + high) / 2


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


def compare(
    candidate: list[float], incumbent: list[float], noise_: Noise, spec: TaskSpec, level: float | None = None
) -> Comparison:
    """The candidate's runs against the incumbent's; the noise rule tests at `level` (a look's share
    of `[decide] level`, see `looks`)."""
    goal = spec.metric.goal
    delta = improvement(statistics.fmean(candidate), statistics.fmean(incumbent), goal)
    floor = spec.metric.min_delta
    if spec.noise_rule and noise_.sigma:  # a spread of 0 tests nothing: single runs, min_delta
        se = noise_.sigma * math.sqrt(1 / len(candidate) + 1 / len(incumbent))
        at = spec.decide.level if level is None else level
        margin = max(floor, t_quantile(1 - at, noise_.dof) * se)
        return Comparison(candidate, incumbent, delta, margin, se, noise_.sigma, noise_.dof, "noise")
    return Comparison(candidate, incumbent, delta, floor, None, noise_.sigma, noise_.dof, "min_delta")


OFF_SD = 3.0  # a run this many sd from the median of its commit's other runs looks off


def thin_noise(spread: Noise, runs: list[float], target_dof: int) -> str:
    """Why the incumbent wants more seeds ("" when it does not): the spread has fewer than
    `target_dof` degrees of freedom, or one of its runs lies over OFF_SD sd from the others' median
    (a heavy tail: that run sways the mean every candidate is compared with)."""
    if spread.sigma is None or spread.dof < target_dof:
        return f"noise estimate: dof {spread.dof} < {target_dof}"
    if len(runs) >= 3:
        for i, value in enumerate(runs):
            others = statistics.median(runs[:i] + runs[i + 1 :])
            if abs(value - others) > OFF_SD * spread.sigma:
                return f"noise estimate: a run {value:.6g} lies over {OFF_SD:g} sd from the others"
    return ""


def looks(max_runs: int) -> list[int]:
    """The candidate's run counts at which it is judged: 1, 2, 4, ... doubling, then max_runs."""
    counts, n = [], 1
    while n < max_runs:
        counts.append(n)
        n *= 2
    return [*counts, max_runs]


def look_level(level: float, max_runs: int) -> float:
    """Each keep look's share of `level`: a keep needs two runs, so the looks from the second on
    split it evenly, and by the union bound a change that does nothing is kept with chance at
    most `level` over all its looks, however they depend on each other. One run alone
    (max_runs 1, `confirm = 0`) is tested at `level`."""
    return level / max(len(looks(max_runs)) - 1, 1)


def without_luckiest(
    candidate: list[float], incumbent: list[float], goal: str
) -> list[tuple[list[float], list[float]]]:
    """The runs again, less the one run that helps the candidate most on either side (its best,
    or the incumbent's worst): a keep must survive both, so one outlier run cannot decide alone."""
    best, worst = (max, min) if goal == "max" else (min, max)
    out = []
    if len(candidate) >= 2:
        rest = list(candidate)
        rest.remove(best(candidate))
        out.append((rest, incumbent))
    if len(incumbent) >= 2:
        rest = list(incumbent)
        rest.remove(worst(incumbent))
        out.append((candidate, rest))
    return out


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
    race: bool = False  # the sequential rule (`confirm` = most extra runs); runs before it: False

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
            race=True,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def overview(trials: list[Trial], rule: Rule, incumbent: Trial | None) -> dict[str, Any]:
    """The decision rule in numbers: the spread, and the margin one new run (or, racing, two) must
    beat."""
    steps = rule.full_steps
    spread = noise(trials, steps, rule.steps)
    runs = values(trials, incumbent.commit, steps, rule.steps) if incumbent else []
    margin: float | None = rule.min_delta
    margin_two: float | None = None
    noise_rule = rule.noise and not spread.unmeasurable and spread.sigma is not None
    racing = rule.race and rule.confirm > 0
    if noise_rule and runs:
        assert spread.sigma is not None  # noise_rule
        level = look_level(rule.level, rule.confirm + 1) if rule.race else rule.level
        need = t_quantile(1 - level, spread.dof) * spread.sigma
        margin = None if racing else max(rule.min_delta, need * math.sqrt(1 + 1 / len(runs)))
        if racing:
            margin_two = max(rule.min_delta, need * math.sqrt(1 / 2 + 1 / len(runs)))
    elif noise_rule:
        margin = None
    return {
        "rule": "noise" if rule.noise and not spread.unmeasurable else "min_delta",
        "level": rule.level if rule.noise else None,
        "min_delta": rule.min_delta,
        "confirm": rule.confirm,
        "repeats": rule.repeats,
        "steps": steps,
        **spread.to_dict(),
        "incumbent_runs": len(runs),
        "incumbent_mean": statistics.fmean(runs) if runs else None,
        "margin_one_run": margin,
        "looks": looks(rule.confirm + 1) if racing and rule.noise else None,
        "margin_two_runs": margin_two,
    }


def describe(o: dict[str, Any]) -> str:
    """An overview in one line of words, for the terminal and both reports."""
    if o["rule"] != "noise":
        how = f"min_delta {o['min_delta']:g}"
    elif o.get("looks"):
        shown = ", ".join(str(n) for n in o["looks"])
        how = f"noise rule, a race judged at {shown} runs, level {o['level']:g} over all looks"
    else:
        how = f"noise rule, one-sided test at level {o['level']:g}, confirm {o['confirm']}"
    if o.get("unmeasurable"):
        return (
            f"NOISE CANNOT BE MEASURED: {o['dof'] + o['groups']} runs of {o['groups']} commit(s) with "
            "different seeds gave identical metrics (does the code seed from ARA_SEED?), so keeps are "
            f"single-run: min_delta {o['min_delta']:g}"
        )
    spread = (
        f"run-to-run sd {o['sigma']:.4g} (dof {o['dof']}, {o['groups']} repeated commits)"
        if o["sigma"] is not None
        else "spread unmeasured"
    )
    margin, two = o["margin_one_run"], o.get("margin_two_runs")
    need = f"; one new run must beat the best by {margin:.4g}" if margin is not None else ""
    if two is not None:
        need = f"; two new runs must beat the best by {two:.4g}, even without the luckier"
    return f"{how}; {spread} at {o['steps']} steps from {o['repeats']} baseline seed(s){need}"


def runs_line(runs: list[float]) -> str:
    """One commit's runs in words (`ara rerun`), saying so when seeds change nothing."""
    if len(runs) < 2:
        return f"{len(runs)} run(s): " + ", ".join(f"{v:.6g}" for v in runs)
    if len(set(runs)) == 1:
        return (
            f"all {len(runs)} runs gave {runs[0]:.6g}: ARA_SEED changes nothing, so noise cannot be "
            "measured and keeps are single-run (seed your code from ARA_SEED to measure it)"
        )
    return f"{len(runs)} runs: mean {statistics.fmean(runs):.6g}, sd {statistics.stdev(runs):.4g}"
