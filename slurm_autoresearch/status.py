"""The `ara status --json` document: a stable contract, documented in the README (schema 1)."""

from __future__ import annotations

import time
from typing import Any

from . import budget, evidence, fidelity
from .ledger import Ledger
from .rundir import RunDir
from .spec import TaskSpec
from .trial import Decision, Trial, TrialKind, TrialState

SCHEMA = 1


def _trial(t: Trial) -> dict[str, Any]:
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


def _decisions(trials: list[Trial], spec: TaskSpec | None, incumbent: Trial | None) -> dict[str, Any] | None:
    return None if spec is None else evidence.overview(trials, spec, incumbent)


def _fidelity(trials: list[Trial], spec: TaskSpec | None) -> dict[str, Any] | None:
    if spec is None or not spec.screening:
        return None
    return {
        "screen_steps": spec.fidelity.screen_steps,
        "full_steps": spec.full_steps,
        "screened": sum(1 for t in trials if t.kind is TrialKind.HYPOTHESIS and t.fidelity == "screen"),
        "promoted": sum(1 for t in trials if t.kind is TrialKind.PROMOTE),
        **fidelity.savings(trials, spec).to_dict(),
    }


def status_document(
    rundir: RunDir, ledger: Ledger, now: float | None = None, spec: TaskSpec | None = None
) -> dict[str, Any]:
    """The run as JSON; with the run's task spec it also carries the decision rule and fidelity."""
    now = time.time() if now is None else now
    meta = ledger.meta()
    trials = ledger.trials()
    kept = sorted((t for t in trials if t.decision is Decision.KEEP), key=lambda t: t.decided_at or 0)
    incumbent = kept[-1] if kept else None
    baseline = trials[0] if trials else None
    created = meta.get("created_at", now)
    ended = meta.get("ended_at")
    wall_hours = meta.get("wall_hours")
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
        },
        "metric": {"name": meta.get("metric"), "goal": meta.get("goal")},
        "budget": {
            "trials": {"used": budget.hypotheses(trials), "limit": meta.get("trial_budget")},
            "jobs": {"used": sum(1 for t in trials if t.job_id), "limit": None},
            "wall_seconds": {
                "used": round((ended or now) - created, 1),
                "limit": wall_hours * 3600 if wall_hours else None,
            },
            "gpu_seconds": {
                "used": round(sum(t.gpu_seconds or 0 for t in trials), 1),
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
        "decisions": _decisions(trials, spec, incumbent),
        "fidelity": _fidelity(trials, spec),
        "counts": {
            **{str(d): sum(1 for t in trials if t.decision is d) for d in Decision},
            **{
                str(s): sum(1 for t in trials if t.state is s)
                for s in (TrialState.QUEUED, TrialState.RUNNING, TrialState.WAITING)
            },
        },
        "trials": [_trial(t) for t in trials],
    }
