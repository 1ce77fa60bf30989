"""The Planner protocol and what a planner sees when it is asked for hypotheses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Protocol

from ..digest import Digest
from ..hypothesis import Hypothesis
from ..task import Task
from ..trial import Trial, TrialKind


@dataclass(frozen=True)
class PlanContext:
    """A planner's view of the run: the task, every trial so far, the incumbent and its files."""

    task: Task
    trials: list[Trial]
    incumbent: Trial | None
    files: dict[str, str]  # editable files of the incumbent commit, workdir-relative
    trials_left: int
    guidance: str = ""  # pending `ara guide` text, not yet shown to a planner
    playbook: str = ""  # as the run began (earlier runs' learnings included): stable, cacheable
    budget_note: str = ""  # other budgets left, in words (GPU-hours, dollars)
    queued: tuple[Hypothesis, ...] = ()  # planned earlier, waiting for a slot: not to be proposed again
    # The curve digests of the latest trials that have one (bounded: see prompt.CURVE_TRIALS).
    digests: Mapping[str, Digest] = field(default_factory=dict)


def history(trials: list[Trial]) -> list[Trial]:
    """What planners see: one row per hypothesis (re-runs are evidence, not ideas); a screened one
    carries its promotion's decision; holdout results never."""
    promoted = {t.of: t for t in trials if t.kind is TrialKind.PROMOTE}
    rows = []
    for t in trials:
        if not t.kind.is_hypothesis():
            continue
        row = replace(t, holdout=None) if t.holdout is not None else t  # copies only where needed
        full = promoted.get(t.id)
        if full is not None and full.decision is not None:
            row = replace(
                row, decision=full.decision, reason=full.reason, learning=full.learning or t.learning
            )
        rows.append(row)
    return rows


class PlannerUnavailable(Exception):
    """The planner cannot answer now (its API is down) and has no fallback: pause, do not stop."""


class Planner(Protocol):
    name: str

    def baseline(self, files: dict[str, str]) -> Hypothesis:
        """The unchanged code as a hypothesis (with its search-space values, where known)."""
        ...

    def propose(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        """Up to n new hypotheses; an empty list means the planner has nothing left to try."""
        ...
