"""Budgets: whether the run may go on, from the ledger alone (so they span resumes)."""

from __future__ import annotations

from .spec import BudgetSection
from .trial import Trial, TrialKind


def hypotheses(trials: list[Trial]) -> int:
    """What budget.trials counts: the baseline and planned hypotheses, not re-runs or combinations."""
    return sum(1 for t in trials if t.kind.counts_against_budget())


def trials_spent(limit: BudgetSection, trials: list[Trial]) -> str:
    """Why no more hypotheses may be planned ("" while some may); their pending re-runs still run."""
    n = hypotheses(trials)
    return f"trial budget spent ({n}/{limit.trials})" if n >= limit.trials else ""


def spent(
    limit: BudgetSection, trials: list[Trial], *, elapsed_s: float, llm_usd: float, llm_tokens: int
) -> str:
    """Why no more jobs may start, or "" while budget remains."""
    if limit.wall_hours and elapsed_s >= limit.wall_hours * 3600:
        return f"wall-clock budget spent ({limit.wall_hours:g} h)"
    if limit.gpu_hours and sum(t.gpu_seconds or 0 for t in trials) >= limit.gpu_hours * 3600:
        return f"GPU budget spent ({limit.gpu_hours:g} GPU-hours)"
    reason = llm_spent(limit, llm_usd, llm_tokens)
    if reason:
        return reason
    streak = 0
    # Ideas that failed, not a combination git could not merge or a re-run of a flaky commit.
    ideas = (
        t for t in trials if t.decided_at and (t.kind.counts_against_budget() or t.kind is TrialKind.PROMOTE)
    )
    for trial in sorted(ideas, key=lambda t: t.decided_at or 0):
        streak = streak + 1 if trial.decision and trial.decision.is_failure() else 0
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
