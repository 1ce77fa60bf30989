"""Budgets: whether the run may go on, from the ledger alone (so they span resumes)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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


# Rows that finish what a budgeted trial started, by kind, under the names the reports use.
EXTRA_KINDS = {"repeat": "repeats", "promote": "promotions", "rerun": "reruns", "combine": "combinations"}


def extra_trials(kinds: dict[str, int]) -> dict[str, int]:
    """Rows outside budget.trials by what they are, from counts by kind: repeats, promotions,
    reruns, combinations (zeros included, so the status document always has every field)."""
    return {name: int(kinds.get(kind, 0)) for kind, name in EXTRA_KINDS.items()}


def trials_line(used: int, limit: int | None, extra: dict[str, int]) -> str:
    """The budget apart from the rows that do not count toward it, as in `16 of 16 budgeted,
    + 2 repeats, 1 rerun, 1 combination`."""
    line = f"{used} of {limit} budgeted" if limit else f"{used} budgeted"
    shown = [f"{n} {name if n != 1 else name[:-1]}" for name, n in extra.items() if n]
    return line + (", + " + ", ".join(shown) if shown else "")


def counted(trials: list[Trial], limit: int | None) -> str:
    """`trials_line` from the rows themselves (the reports hold every trial already)."""
    kinds: dict[str, int] = {}
    for t in trials:
        kinds[str(t.kind)] = kinds.get(str(t.kind), 0) + 1
    return trials_line(hypotheses(trials), limit, extra_trials(kinds))


def wall_seconds(meta: dict[str, Any], now: float) -> float:
    """The run's own wall time, from its creation to its end (now while it runs): `ara rerun`
    sessions on an ended run do not stretch it (they are `rerun_seconds`)."""
    created = float(meta.get("created_at") or now)
    return max(0.0, float(meta.get("ended_at") or now) - created)


def rerun_seconds(meta: dict[str, Any], now: float) -> float:
    """Wall time of `ara rerun` sessions on the run after it ended (the live one up to now)."""
    since = meta.get("rerun_since")
    return float(meta.get("rerun_seconds") or 0.0) + (max(0.0, now - float(since)) if since else 0.0)


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


def time_limit_hint(trials: list[Trial], trial_minutes: float | None) -> str:
    """What to say when jobs keep hitting the time limit ("" while they do not): two timeouts are
    a pattern, and the jobs that finished show how long a trial really takes here."""
    timed_out = [t for t in trials if t.job_state == "timeout"]
    if len(timed_out) < 2:
        return ""
    took = sorted(t.elapsed for t in trials if t.job_state == "completed" and t.elapsed is not None)
    limit = f"the {trial_minutes:g}-minute limit" if trial_minutes else "the time limit"
    line = f"{len(timed_out)} trials hit {limit} ([budget] trial_minutes)"
    if took:
        line += f"; finished trials took {took[len(took) // 2]:.0f} s median, {took[-1]:.0f} s max"
    return (
        line + ": trial_minutes looks too low for this code (or trials share too few cores: "
        "parallel x cpus_per_trial against the machine's)"
    )
