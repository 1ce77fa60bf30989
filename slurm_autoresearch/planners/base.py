"""The Planner protocol and what a planner sees when it is asked for hypotheses."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from ..hypothesis import Hypothesis
from ..task import Task
from ..trial import Trial


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
