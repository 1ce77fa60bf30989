"""Keep, discard, confirm or crash: judged on the frozen evaluation's runs against the incumbent's."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .evidence import Comparison, compare, look_level, looks, noise, steps_of, values, without_luckiest
from .outcome import JobState, Outcome
from .spec import TaskSpec
from .trial import Decision, Trial


@dataclass(frozen=True)
class Verdict:
    decision: Decision | None  # None: run `confirm` more seeds first
    reason: str
    delta: float | None = None  # improvement over the incumbent, positive = better in the task's direction
    evidence: dict[str, Any] | None = None
    confirm: int = 0  # new-seed runs of the candidate to wait for
    race: int = 0  # new-seed runs of the incumbent, so that it has as many as the candidate


def failed(outcome: Outcome) -> Verdict | None:
    """The verdict of a run without a usable metric; None when it has one."""
    if outcome.state is JobState.TAMPERED:
        return Verdict(Decision.REJECTED, f"tampered: {outcome.reason}")
    if outcome.state is JobState.STOPPED:
        return Verdict(Decision.DISCARD, outcome.reason)  # it lost the race: not a crash
    if outcome.state is not JobState.COMPLETED or not outcome.has_metric:
        return Verdict(Decision.CRASH, outcome.reason or f"job {outcome.state.value} without a metric")
    return None


def net_lines(patch: str) -> int:
    """Lines added minus lines removed by a unified diff."""
    added = removed = 0
    for line in patch.splitlines():
        if line.startswith("+") and not line.startswith("+++"):
            added += 1
        elif line.startswith("-") and not line.startswith("---"):
            removed += 1
    return added - removed


def _jump(cmp: Comparison, spec: TaskSpec) -> float | None:
    """The candidate's metric as a multiple of the incumbent's, in the better direction."""
    cand = sum(cmp.candidate) / len(cmp.candidate)
    inc = sum(cmp.incumbent) / len(cmp.incumbent)
    if cand <= 0 or inc <= 0:
        return None  # a ratio says nothing across zero
    return cand / inc if spec.metric.goal == "max" else inc / cand


def judge(
    trial: Trial,
    trials: list[Trial],
    incumbent: Trial,
    spec: TaskSpec,
    patch: str = "",
    *,
    confirm: bool = True,
) -> Verdict:
    """A full-budget candidate against the incumbent, on every run each has at this step budget;
    with confirm=False (no more jobs may start) it decides on the runs there are.

    Under the noise rule this is a race (DESIGN.md, "Sequential evidence"): the candidate is judged
    at 1, 2, 4, 8, ... runs up to `confirm` + 1, the incumbent topped up to as many; it is kept at
    the first look where it passes the test at that look's share of `level`, even without its luckiest
    run, and dropped as soon as its t falls below `promising` x log2(runs)."""
    steps = steps_of(trial, spec.budget.steps)
    runs = values(trials, trial.commit, steps, spec.budget.steps)
    against = values(trials, incumbent.commit, steps, spec.budget.steps) or (
        [incumbent.metric] if incumbent.metric is not None else []
    )
    assert runs and against, "judge needs a measured candidate and incumbent"
    spread = noise(trials, steps, spec.budget.steps)
    decide = spec.decide
    most = decide.confirm + 1
    level = look_level(decide.level, most)
    cmp = compare(runs, against, spread, spec, level)
    evidence = cmp.to_dict() | {"incumbent_trial": incumbent.id, "steps": steps}
    shown = cmp.describe()

    def verdict(decision: Decision | None, reason: str, more: int = 0, race: int = 0) -> Verdict:
        return Verdict(decision, reason, cmp.delta, evidence, more, race)

    if cmp.rule == "noise":
        evidence |= {"look_level": round(level, 8), "max_runs": most}
        passed = cmp.delta > cmp.margin
        if passed and most > 1:  # one run never keeps alone; nor does one lucky run of several
            rest = without_luckiest(runs, against, spec.metric.goal)
            checks = [compare(c, i, spread, spec, level) for c, i in rest]
            evidence["without_luckiest"] = [round(c.delta - c.margin, 8) for c in checks]
            passed = len(runs) >= 2 and all(c.delta > c.margin for c in checks)
        if passed:
            return verdict(Decision.KEEP, f"beats the incumbent {incumbent.id}: {shown}")
        n = len(runs)
        bound = decide.promising * math.log2(n)
        if confirm and n < most and cmp.t is not None and cmp.t >= bound:
            target = next(k for k in looks(most) if k > n)
            race = max(0, min(target, most) - len(against))
            also = f", the incumbent {race} more" if race else ""
            return verdict(
                None, f"promising (t {cmp.t:.2f} >= {bound:.2f}): {shown}; racing{also}", target - n, race
            )
        if n >= most:
            why = f"not better enough after {n} runs"
        elif cmp.t is not None and cmp.t < bound:
            why = f"unpromising (t {cmp.t:.2f} < {bound:.2f})"
        else:
            why = f"promising after {n} run(s), but no more jobs may start"
        return _final(cmp, verdict, patch, spec, f"{why}: {shown}")

    if cmp.delta > cmp.margin:
        ratio = _jump(cmp, spec)
        if confirm and decide.jump and ratio is not None and ratio > decide.jump and len(runs) < 2:
            return verdict(None, f"{ratio:.3g}x the incumbent (over jump {decide.jump:g}): confirming", 1)
        return verdict(Decision.KEEP, f"beats the incumbent {incumbent.id}: {shown}")
    return _final(cmp, verdict, patch, spec, f"does not beat the incumbent {incumbent.id}: {shown}")


def _final(cmp: Comparison, verdict: Callable[..., Verdict], patch: str, spec: TaskSpec, why: str) -> Verdict:
    """A candidate that did not pass: a discard, unless it ties and is simpler."""
    lines = net_lines(patch)
    if spec.decide.simplicity and lines < 0 and cmp.delta >= -cmp.margin:
        tie = f"a tie within the margin and simpler ({lines:+d} lines): {cmp.describe()}"
        keep = verdict(Decision.KEEP, tie)
        assert keep.evidence is not None
        keep.evidence["net_lines"] = lines
        return keep
    if cmp.rule == "min_delta" and cmp.delta > 0:
        return verdict(Decision.DISCARD, f"better by less than the margin: {cmp.describe()}")
    return verdict(Decision.DISCARD, why)


def learning(trial: Trial, outcome: Outcome, verdict: Verdict, incumbent: Trial | None, metric: str) -> str:
    """One line for the playbook and the planner: what was tried and what came of it."""
    if verdict.decision is Decision.CRASH:
        return f"{trial.title}: crashed ({outcome.reason or outcome.state.value})"
    if verdict.decision is Decision.REJECTED:
        return f"{trial.title}: rejected ({verdict.reason})"
    if outcome.state is JobState.STOPPED:
        return f"{trial.title}: {verdict.reason} -> discard"
    against = f" vs {incumbent.id}" if incumbent else ""
    delta = f" ({verdict.delta:+.4g}{against})" if verdict.delta is not None else ""
    runs = (verdict.evidence or {}).get("candidate") or []
    value = sum(runs) / len(runs) if runs else outcome.metric
    n = f" mean of {len(runs)}" if len(runs) > 1 else ""
    decision = verdict.decision.value if verdict.decision else "confirming"
    return f"{trial.title}: {metric}{n} {value:.4g}{delta} -> {decision}"
