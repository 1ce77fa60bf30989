"""The `ara status --json` document: a stable contract, documented in the README (schema 1)."""

from __future__ import annotations

import time
from typing import Any

from .. import budget, evidence, fidelity, transfer
from ..errors import TaskError
from ..evidence import Rule
from ..ledger import Ledger
from ..rundir import RunDir
from ..trial import Trial, TrialKind, TrialState

SCHEMA = 1


def trial_fields(t: Trial) -> dict[str, Any]:
    """One trial as the status document (and `ara export`) show it."""
    return {
        "id": t.id,
        "state": str(t.state),
        "decision": str(t.decision) if t.decision else None,
        "metric": t.metric,
        "parent": t.parent,
        "parent_trial": t.parent_trial,
        "commit": t.commit,
        "job_id": t.job_id,
        "job_state": t.job_state,
        "elapsed": t.elapsed,
        "gpu_seconds": t.gpu_seconds,
        "node": t.node,
        "llm_usd": round(t.llm_usd, 6),
        "llm_tokens": t.llm_tokens,
        "attempts": t.attempts,
        "pending_reason": t.pending_reason,
        "started_at": t.started_at,
        "job_started_at": t.job_started_at,
        "job_ended_at": t.job_ended_at,
        "title": t.title,
        "source": t.source,
        "reason": t.reason,
        "kind": str(t.kind),
        "of": t.of,
        "seed": t.seed,
        "steps": t.steps,
        "fidelity": t.fidelity,
        "round": t.round,
        "evidence": t.evidence,
        "holdout": t.holdout,
    }


def run_state(rundir: RunDir, recorded: str) -> str:
    """The recorded state, except that a `running` run whose controller is gone is `interrupted`."""
    if recorded != "running":
        return recorded
    holder = rundir.lock_holder()
    if holder is None or rundir.holder_alive(holder) is False:
        return "interrupted"
    return recorded


def rule_of(rundir: RunDir, meta: dict[str, Any]) -> Rule | None:
    """The run's decision settings: from the ledger, or (runs from before they were kept there)
    from the task copy; None when neither can be read."""
    if meta.get("rule"):
        return Rule(**meta["rule"])
    from ..task import read_spec  # pydantic: only for old runs

    try:
        return Rule.of(read_spec(rundir.task_copy))
    except TaskError:
        return None


def _fidelity(ledger: Ledger, rule: Rule | None, shown: list[Trial] | None) -> dict[str, Any] | None:
    if rule is None or not rule.screen_steps:
        return None
    trials = shown if shown is not None else ledger.trials(light=True)
    return {
        "screen_steps": rule.screen_steps,
        "full_steps": rule.full_steps,
        "screened": sum(1 for t in trials if t.kind is TrialKind.HYPOTHESIS and t.fidelity == "screen"),
        "promoted": sum(1 for t in trials if t.kind is TrialKind.PROMOTE and t.fidelity != "screen"),
        **fidelity.savings(trials, rule.full_steps, rule.screen_steps).to_dict(),
        # `auto`: what the cost model measured and decided (None until then, and without auto)
        "plan": ledger.meta().get("fidelity_plan"),
    }


def status_document(
    rundir: RunDir,
    ledger: Ledger,
    now: float | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """The run as JSON, with the decision rule and fidelity where the run's settings are known.
    With limit, `trials` holds the live ones and the last `limit` (and `trials_total` says how
    many there are): counts come from SQL, so a one-screen view of 10,000 trials stays fast."""
    now = time.time() if now is None else now
    meta = ledger.meta()
    rule = rule_of(rundir, meta)
    tally = ledger.tally()
    incumbent = ledger.incumbent()
    baseline = ledger.first()
    if limit is None:
        shown = ledger.trials(light=True)
    else:
        shown = ledger.undecided_or_after(tally["last_seq"] - limit)
    measured = {t.id: t for t in [*ledger.repeated(), *([incumbent] if incumbent else [])]}
    decisions = evidence.overview(list(measured.values()), rule, incumbent) if rule else None
    created = meta.get("created_at", now)
    ended = meta.get("ended_at")
    wall_hours = meta.get("wall_hours")
    extra = budget.extra_trials(tally["kinds"])
    holder = rundir.lock_holder()
    llm_usd, llm_tokens = ledger.llm_totals()
    return {
        "schema": SCHEMA,
        "run": {
            "id": rundir.run_id,
            "task": meta.get("task"),
            "state": run_state(rundir, meta.get("state", "running")),
            "reason": meta.get("end_reason", ""),
            "dir": str(rundir.path),
            "repo": meta.get("repo"),
            "workdir": meta.get("workdir"),
            "base_commit": meta.get("base_commit"),
            "best_branch": meta.get("best_branch"),
            "executor": meta.get("executor"),
            "planner": meta.get("planner"),
            "summarizer": meta.get("summarizer"),
            "parallel": meta.get("parallel"),
            "watch": meta.get("watch"),
            "created_at": created,
            "ended_at": ended,
            "controller": {"host": holder.get("host"), "pid": holder.get("pid")} if holder else None,
            "sandbox": meta.get("sandbox"),
        },
        "metric": {"name": meta.get("metric"), "goal": meta.get("goal")},
        "budget": {
            "trials": {"used": tally["hypotheses"], "limit": meta.get("trial_budget"), **extra},
            "jobs": {"used": tally["jobs"], "limit": None},
            "wall_seconds": {
                "used": round(budget.wall_seconds(meta, now), 1),
                "limit": wall_hours * 3600 if wall_hours else None,
                "reruns": round(budget.rerun_seconds(meta, now), 1),
            },
            "gpu_seconds": {
                "used": round(tally["gpu_seconds"], 1),
                "limit": meta["gpu_hours"] * 3600 if meta.get("gpu_hours") else None,
            },
            "llm_usd": {"used": round(llm_usd, 6), "limit": meta.get("llm_usd")},
            "llm_tokens": {"used": llm_tokens, "limit": meta.get("llm_tokens")},
        },
        "incumbent": None
        if incumbent is None
        else {
            "trial": incumbent.id,
            "commit": incumbent.commit,
            "metric": incumbent.metric,
            "title": incumbent.title,
        },
        "baseline": None
        if baseline is None
        else {
            "trial": baseline.id,
            "commit": baseline.commit,
            "metric": baseline.metric,
        },
        "decisions": decisions,
        "fidelity": _fidelity(ledger, rule, shown if limit is None else None),
        "counts": {
            **tally["decisions"],
            **{
                str(s): tally["states"][str(s)]
                for s in (TrialState.QUEUED, TrialState.RUNNING, TrialState.WAITING)
            },
        },
        "hints": hints(ledger, meta),
        "transfer": _transfer(ledger, meta, baseline),
        "trials": [trial_fields(t) for t in shown],
        **({"trials_total": tally["trials"]} if limit is not None else {}),
    }


def _transfer(ledger: Ledger, meta: dict[str, Any], baseline: Trial | None) -> dict[str, Any] | None:
    """`[validate]`'s transfer check: its verdict, why it did not run, or None (not asked for, or
    not reached yet). Reads the check's rows and the runs of their commits, not every trial."""
    checks = ledger.from_source(transfer.SOURCE)
    if not checks:
        return {"skipped": meta["transfer_skipped"]} if meta.get("transfer_skipped") else None
    rows = {t.id: t for t in [*ledger.measured(*{t.commit for t in checks}), *checks]}
    found = transfer.verdict(
        rows.values(), meta.get("goal") or "max", (baseline.steps if baseline else 0) or 0
    )
    if found is None:
        return {"running": sum(1 for t in checks if t.decision is None)}
    return found.to_dict()


def hints(ledger: Ledger, meta: dict[str, Any]) -> list[str]:
    """What the run's own record says to change, in words (empty when nothing)."""
    found = []
    timed_out = ledger.with_job_state("timeout")
    if len(timed_out) >= 2:  # only then are the finished jobs' times worth reading
        finished = ledger.with_job_state("timeout", "completed")
        line = budget.time_limit_hint(finished, meta.get("trial_minutes"))
        if line:
            found.append(line)
    return found


def run_line(rundir: RunDir) -> dict[str, Any]:
    """One run in a few fields, for `ara status --all`."""
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        meta = ledger.meta()
        tally = ledger.tally()
        best = ledger.incumbent()
    finally:
        ledger.close()
    return {
        "id": rundir.run_id,
        "task": meta.get("task"),
        "state": run_state(rundir, meta.get("state", "running")),
        "dir": str(rundir.path),
        "created_at": meta.get("created_at"),
        "trials": {"used": tally["hypotheses"], "limit": meta.get("trial_budget")},
        "running": tally["states"]["running"],
        "metric": {"name": meta.get("metric"), "goal": meta.get("goal")},
        "best": None if best is None else {"trial": best.id, "metric": best.metric, "title": best.title},
    }
