"""Keep, discard, confirm or crash: judged on the frozen evaluation's runs against the incumbent's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .evidence import Comparison, compare, noise, steps_of, values
from .outcome import JobState, Outcome
from .spec import TaskSpec
from .trial import Decision, Trial


@dataclass(frozen=True)
class Verdict:
    decision: Decision | None  # None: run `confirm` more seeds first
    reason: str
    delta: float | None = None  # improvement over the incumbent, positive = better in the task's direction
    evidence: dict[str, Any] | None = None
    confirm: int = 0


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
    with confirm=False (no more jobs may start) it decides on the runs there are."""
    steps = steps_of(trial, spec.budget.steps)
    runs = values(trials, trial.commit, steps, spec.budget.steps)
    against = values(trials, incumbent.commit, steps, spec.budget.steps) or (
        [incumbent.metric] if incumbent.metric is not None else []
    )
    assert runs and against, "judge needs a measured candidate and incumbent"
    cmp = compare(runs, against, noise(trials, steps, spec.budget.steps), spec)
    evidence = cmp.to_dict() | {"incumbent_trial": incumbent.id, "steps": steps}
    decide = spec.decide
    done = len(runs) - 1  # confirmations so far
    shown = cmp.describe()

    def verdict(decision: Decision | None, reason: str, confirm: int = 0) -> Verdict:
        return Verdict(decision, reason, cmp.delta, evidence, confirm)

    if cmp.delta > cmp.margin:
        ratio = _jump(cmp, spec)
        needed = max(decide.confirm, 1)
        if confirm and decide.jump and ratio is not None and ratio > decide.jump and done < needed:
            n = needed - done
            return verdict(None, f"{ratio:.3g}x the incumbent (over jump {decide.jump:g}): confirming", n)
        return verdict(Decision.KEEP, f"beats the incumbent {incumbent.id}: {shown}")
    if confirm and cmp.t is not None and cmp.t >= decide.promising and done < decide.confirm:
        return verdict(None, f"promising inside the margin: {shown}; confirming", decide.confirm - done)
    lines = net_lines(patch)
    if decide.simplicity and lines < 0 and cmp.delta >= -cmp.margin:
        evidence["net_lines"] = lines
        return verdict(Decision.KEEP, f"a tie within the margin and simpler ({lines:+d} lines): {shown}")
    if cmp.delta > 0:
        return verdict(Decision.DISCARD, f"better by less than the margin: {shown}")
    return verdict(Decision.DISCARD, f"does not beat the incumbent {incumbent.id}: {shown}")


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
