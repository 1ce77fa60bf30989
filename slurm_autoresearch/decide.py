"""Keep, discard or crash: the metric comes only from the frozen evaluation's outcome."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .outcome import JobState, Outcome
from .trial import Decision


@dataclass(frozen=True)
class Verdict:
    decision: Decision
    reason: str
    delta: float | None = None  # improvement over the incumbent, positive = better in the task's direction


def improvement(metric: float, incumbent: float, goal: Literal["min", "max"]) -> float:
    return metric - incumbent if goal == "max" else incumbent - metric


def decide(
    outcome: Outcome, incumbent: float | None, goal: Literal["min", "max"], min_delta: float
) -> Verdict:
    """keep when the metric beats the incumbent by more than min_delta; crash without a metric."""
    if outcome.state is not JobState.COMPLETED or not outcome.has_metric:
        return Verdict(Decision.CRASH, outcome.reason or f"job {outcome.state.value} without a metric")
    assert outcome.metric is not None
    if incumbent is None:
        return Verdict(Decision.KEEP, "first result: becomes the incumbent")
    delta = improvement(outcome.metric, incumbent, goal)
    if delta > min_delta:
        return Verdict(
            Decision.KEEP, f"beats the incumbent {incumbent:.6g} by {delta:.6g} (> {min_delta:g})", delta
        )
    if delta > 0:
        return Verdict(
            Decision.DISCARD,
            f"better than {incumbent:.6g} by only {delta:.6g} (<= min_delta {min_delta:g})",
            delta,
        )
    return Verdict(Decision.DISCARD, f"does not beat the incumbent {incumbent:.6g} ({delta:+.6g})", delta)
