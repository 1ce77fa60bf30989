"""A finished run written through the real Ledger with every kind of row, for report and view tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from slurm_autoresearch.evidence import Rule
from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.rundir import RunDir, atomic_write_text
from slurm_autoresearch.trial import Decision, TrialKind, TrialState

from .conftest import TASK

CREATED, ENDED, RERUN_S = 1_000_000.0, 1_000_600.0, 120.0
LONG = "Warm the learning rate up over the first tenth of the steps, then decay it on a cosine to zero"

# id: (kind, title, parent_trial, of, params, decision, metric, extra)
ROWS: list[tuple[str, str, str | None, str | None, dict[str, Any] | None, Decision, float | None, dict]] = [
    ("baseline", "baseline", None, None, {"x": 0.5, "y": 2.0}, Decision.KEEP, -15.25, {}),
    ("repeat", "repeat of T0001: baseline", None, "T0001", None, Decision.REPEAT, -15.3, {}),
    ("hypothesis", "x to 2", "T0001", None, {"x": 2.0, "y": 2.0}, Decision.KEEP, -10.0, {}),
    ("hypothesis", "y to 0", "T0001", None, {"x": 0.5, "y": 0.0}, Decision.KEEP, -7.25, {}),
    ("combine", "Combine T0004 and T0003", "T0004", None, None, Decision.DISCARD, -7.3,
     {"combines": ["T0004", "T0003"]}),
    ("hypothesis", LONG, "T0004", None, {"x": 0.7, "y": 0.1}, Decision.DISCARD, -7.5, {}),
    ("hypothesis", "a code edit that crashes", "T0004", None, None, Decision.CRASH, None, {}),
    ("rerun", "rerun of T0004: y to 0", "T0001", "T0004", None, Decision.REPEAT, -7.2, {}),
]  # fmt: skip


def synthetic_run(root: Path, *, rows: list[tuple] | None = None, trials: int = 5) -> RunDir:
    """A finished run `toy-synthetic`: baseline and a repeat, two keeps from the baseline (the later
    one the best), their combination discarded, a discard, a crash and an `ara rerun` afterwards."""
    rundir = RunDir.create(root, "toy-synthetic")
    atomic_write_text(rundir.task_copy, TASK.format(trials=trials, parallel=2))
    ledger = Ledger.open(rundir.ledger)
    ledger.set_meta(
        run_id=rundir.run_id,
        task="toy",
        metric="score",
        goal="max",
        executor="local",
        planner="offline",
        summarizer="rules",
        parallel=2,
        trial_budget=trials,
        state="finished",
        end_reason=f"trial budget spent ({trials}/{trials})",
        created_at=CREATED,
        ended_at=ENDED,
        rerun_seconds=RERUN_S,
        base_commit="0" * 40,
        best_branch="ara/toy-synthetic/best",
        watch="processes",
        frozen={},
        rule=Rule("max", 0.0, False, 0.01, 4, 1, 5, 5, 0).to_dict(),
    )
    for seq, (kind, title, parent, of, params, decision, metric, extra) in enumerate(rows or ROWS, start=1):
        at = CREATED + seq * 10
        h = Hypothesis(title, "why", params=params, source=kind, extra=extra)
        t = ledger.add_trial(
            h,
            parent=f"{int(parent[1:]) if parent else 0:040x}",
            parent_trial=parent,
            now=at,
            kind=TrialKind(kind),
            of=of,
            commit=f"{seq:040x}",
        )
        # A finished history written as it stands, not step by step: the product writes only
        # through trials.Trials, which checks each step.
        fields = dict(
            state=TrialState.DONE,
            decision=decision,
            metric=metric,
            job_id=f"pid:{4000 + seq}",
            job_state="completed" if metric is not None else "failed",
            elapsed=5.0,
            gpu_seconds=0.0,
            decided_at=at + 5,
        )
        ledger._write(t, at + 5, "", None, fields)
    ledger.close()
    return rundir
