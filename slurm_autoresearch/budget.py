"""Budgets: whether the run may go on, from the ledger alone (so they span resumes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the ledger imports this module: it stays free of pydantic
    from .spec import BudgetSection
    from .trial import Trial


@dataclass(frozen=True)
class Spending:
    """What the budgets are checked against, summed in SQL (`Ledger.spending`) once per poll."""

    hypotheses: int  # the baseline and planned hypotheses: what budget.trials counts
    gpu_seconds: float
    failures_in_a_row: int  # the latest decided ideas that crashed or were rejected
    llm_usd: float
    llm_tokens: int


def hypotheses(trials: list[Trial]) -> int:
    """What budget.trials counts: the baseline and planned hypotheses, not re-runs or combinations."""
    return sum(1 for t in trials if t.kind.counts_against_budget())


def trials_spent(limit: BudgetSection, hypotheses: int) -> str:
    """Why no more hypotheses may be planned ("" while some may); their pending re-runs still run."""
    return f"trial budget spent ({hypotheses}/{limit.trials})" if hypotheses >= limit.trials else ""


def spent(limit: BudgetSection, spending: Spending, *, elapsed_s: float) -> str:
    """Why no more jobs may start, or "" while budget remains."""
    if limit.wall_hours and elapsed_s >= limit.wall_hours * 3600:
        return f"wall-clock budget spent ({limit.wall_hours:g} h)"
    if limit.gpu_hours and spending.gpu_seconds >= limit.gpu_hours * 3600:
        return f"GPU budget spent ({limit.gpu_hours:g} GPU-hours)"
    reason = llm_spent(limit, spending.llm_usd, spending.llm_tokens)
    if reason:
        return reason
    streak = spending.failures_in_a_row
    if streak >= limit.crash_limit:
        return (
            f"stopped: {streak} trials in a row crashed or were rejected "
            f"(crash_limit = {limit.crash_limit}); see `ara status`"
        )
    return ""


def llm_spent(limit: BudgetSection, usd: float, tokens: int) -> str:
    if limit.llm_usd and usd >= limit.llm_usd:
        return f"LLM budget spent (${usd:.4f} of ${limit.llm_usd:g})"
    if limit.llm_tokens and tokens >= limit.llm_tokens:
        return f"LLM token budget spent ({tokens} of {limit.llm_tokens})"
    return ""
