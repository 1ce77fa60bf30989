"""The run's W&B summary run (trial table, metric and running best), written by its own process."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..evidence import running_best
from ..executors.tracking import offline_runs, summary_dir, wandb_run_id
from ..ledger import Ledger
from ..rundir import RunDir
from ..trial import Decision, Trial

LOG_NAME = "wandb-summary.log"
COLUMNS = [
    "id",
    "kind",
    "of",
    "parent_trial",
    "title",
    "decision",
    "metric",
    "steps",
    "seed",
    "fidelity",
    "gpu_seconds",
    "llm_usd",
    "reason",
]
# Variables that would name another run: the summary run's identity comes from init's arguments.
_RUN_VARS = (
    "WANDB_RUN_ID",
    "WANDB_NAME",
    "WANDB_NOTES",
    "WANDB_RUN_GROUP",
    "WANDB_JOB_TYPE",
    "WANDB_TAGS",
    "WANDB_RESUME",
    "WANDB_DIR",
    "WANDB_MODE",
)


def _settings(rundir: RunDir, meta: dict[str, Any]) -> tuple[str, str, int]:
    """Project, tracking mode and default step budget, from the run's frozen task copy."""
    from ..errors import AraError
    from ..task import read_spec

    try:
        spec = read_spec(rundir.task_copy)
    except AraError:  # an unreadable copy still gets a summary, under the task's name
        return str(meta.get("task") or rundir.run_id), "offline", 0
    return spec.tracking.project or spec.task.name, spec.tracking.wandb, spec.budget.steps


def rows(trials: list[Trial], default_steps: int) -> list[list[Any]]:
    """The trial table, one row per ledger row, in COLUMNS order."""
    return [
        [
            t.id,
            str(t.kind),
            t.of,
            t.parent_trial,
            t.title,
            str(t.decision or t.state),
            t.metric,
            t.steps or default_steps,
            t.seed,
            t.fidelity,
            t.gpu_seconds,
            t.llm_usd,
            t.reason,
        ]
        for t in trials
    ]


def trail(trials: list[Trial], goal: str) -> list[tuple[int, dict[str, float]]]:
    """(seq, values) per measured trial: its metric and the running best of kept trials, the
    step line of progress.png, so W&B shows the report's trail."""
    out: list[tuple[int, dict[str, float]]] = []
    improved = dict(running_best(trials, goal))
    best: float | None = None
    for t in trials:
        if t.metric is None:
            continue
        best = improved.get(t.seq, best)
        values = {"metric": t.metric, "kept": float(t.decision is Decision.KEEP)}
        if best is not None:
            values["best"] = best
        out.append((t.seq, values))
    return out


def write_summary(run_dir: Path) -> Path | None:
    """Write (again) the run's offline summary run; its directory, or None when tracking is off."""
    rundir = RunDir(run_dir)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        meta = ledger.meta()
        trials = ledger.trials(light=True)
        incumbent = ledger.incumbent()
        llm_usd = ledger.llm_totals()[0]
    finally:
        ledger.close()
    project, mode, default_steps = _settings(rundir, meta)
    if mode == "off":
        return None
    goal = str(meta.get("goal", "max"))
    target = summary_dir(rundir.path)
    # The same run id each time: replace the previous files rather than add a second run beside them.
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name in _RUN_VARS:
        os.environ.pop(name, None)
    # Staged artifact files (the table) must survive until `ara sync`, on the shared filesystem.
    os.environ["WANDB_DATA_DIR"] = str(target / "data")

    import wandb  # here only: the controller never pays for it

    run = wandb.init(
        dir=str(target),
        mode="offline",
        project=project,
        id=wandb_run_id(rundir.run_id, "summary"),
        name="summary",
        group=rundir.run_id,
        job_type="summary",
        notes=f"ara run {rundir.run_id}: every trial and the running best",
        tags=["ara", "summary"],
        config={
            k: meta.get(k)
            for k in ("task", "metric", "goal", "base_commit", "best_branch", "executor", "planner")
        },
        settings=wandb.Settings(silent=True, disable_git=True, console="off", x_disable_stats=True),
    )
    try:
        # A copy: wandb types `columns` as a list of str | int, which a list of str is not.
        table = wandb.Table(columns=list(COLUMNS), data=rows(trials, default_steps))
        points = trail(trials, goal)
        for seq, values in points[:-1]:
            run.log({**values, "trial": seq}, step=seq)
        last_seq, last = points[-1] if points else (max((t.seq for t in trials), default=0), {})
        run.log({**last, "trial": last_seq, "trials": table}, step=last_seq)
        run.summary.update(
            {
                "best_metric": incumbent.metric if incumbent else None,
                "best_trial": incumbent.id if incumbent else None,
                "best_title": incumbent.title if incumbent else None,
                "trials_total": len(trials),
                "jobs": sum(1 for t in trials if t.job_id),
                **{f"decisions/{d.value}": sum(1 for t in trials if t.decision is d) for d in Decision},
                "gpu_hours": sum(t.gpu_seconds or 0.0 for t in trials) / 3600,
                "llm_usd": llm_usd,
                "state": meta.get("state"),
            }
        )
    finally:
        run.finish()
    return Path(run.settings.sync_dir)


def spawn_summary(run_dir: Path) -> subprocess.Popen[bytes]:
    """Start the summary writer detached, output in <run_dir>/wandb-summary.log: the controller
    never imports wandb (~85 MB and seconds), and a stuck wandb cannot hold up its exit."""
    log = (run_dir / LOG_NAME).open("ab")
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "slurm_autoresearch.views.wandb_summary", str(run_dir)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # survives the controller and its terminal
        )
    finally:
        log.close()  # the child holds its own copy


def sync_commands(run_dir: Path, extra: Sequence[str] = ()) -> list[list[str]]:
    """`wandb sync` for each trial with offline runs, then the summary run. A trial's runs go in
    one command: a retried trial's attempts share the W&B id and are synced in start order."""
    base = [sys.executable, "-m", "wandb", "sync", *extra]
    commands = []
    trial_dirs = sorted(p for p in (run_dir / "trials").glob("*") if p.is_dir())
    for tdir in [*trial_dirs, summary_dir(run_dir)]:
        runs = offline_runs(tdir)
        if runs:
            commands.append([*base, *map(str, runs)])
    return commands


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m slurm_autoresearch.views.wandb_summary RUN_DIR", file=sys.stderr)
        return 2
    run_dir = Path(args[0]).resolve()
    if not (run_dir / "ledger.sqlite").is_file():
        print(f"{run_dir}: no ledger.sqlite here", file=sys.stderr)
        return 2
    written = write_summary(run_dir)
    print("W&B tracking is off for this run" if written is None else f"W&B summary run: {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
