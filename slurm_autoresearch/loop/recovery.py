"""Resuming a run from its ledger alone: what each trial's last recorded step says to do next.

Every step of the loop is written to the ledger before its side effect counts as done, or the
effect is idempotent, so a controller killed at any instant is replaced by this walk:
- decided trials: the best branch follows the incumbent again, worktrees go, reports are written;
- planned, no commit: materialize again (worktree and branch are rebuilt from scratch);
- planned with a commit, or submitting: find a job started for it (runner.pid locally, the job
  comment on Slurm) and attach to it, or submit it;
- queued or running: re-attach by job id; a job that ended meanwhile reports its outcome;
- waiting (measured, not decided): judged again, which decides it or finds it still waiting.
"""

from __future__ import annotations

from collections.abc import Callable

from ..digest import DIGEST_FILE
from ..executors import Executor
from ..executors.base import JobSpec
from ..ledger import Ledger
from ..outcome import JobState, Outcome
from ..rundir import RunDir
from ..spec import TaskSpec
from ..trial import Decision, TrialState
from ..trials import Trials
from ..views import report
from ..workspace import Workspace
from .jobs import Jobs
from .referee import Referee
from .state import RunState
from .watcher import keep_digest


def recover(
    *,
    spec: TaskSpec,
    rundir: RunDir,
    ledger: Ledger,
    trials: Trials,
    state: RunState,
    jobs: Jobs,
    executor: Executor,
    workspace: Workspace,
    referee: Referee,
    log: Callable[[str], None],
) -> None:
    """Carry on from the ledger: every trial's next step, as the module docstring lists them."""
    rows = ledger.trials()
    if not rows:
        return
    stale = workspace.clear_stale_locks()  # a git killed with the controller left these behind
    if stale:
        log(f"removed {len(stale)} stale git lock files: {', '.join(stale)}")
    kept = sorted((t for t in rows if t.decision is Decision.KEEP), key=lambda t: t.decided_at or 0)
    if kept:
        state.incumbent = kept[-1]
        if kept[-1].commit:
            workspace.keep(kept[-1].commit)  # a decision recorded before the branch moved
    submit: list[JobSpec] = []
    find: list[JobSpec] = []
    attached = 0
    waiting: list[str] = []
    for trial in rows:
        if trial.state is TrialState.WAITING:
            workspace.release(trial.id)
            waiting.append(trial.id)
            if not (rundir.trial_dir(trial.id) / DIGEST_FILE).exists():
                keep_digest(spec, rundir.trial_dir(trial.id))  # written by a controller of before
            continue
        if trial.state is TrialState.DONE:
            workspace.release(trial.id)
            if not (rundir.trial_dir(trial.id) / "report.md").exists():
                if trial.job_id and not (rundir.trial_dir(trial.id) / DIGEST_FILE).exists():
                    keep_digest(spec, rundir.trial_dir(trial.id))
                outcome = Outcome.read(
                    rundir.trial_dir(trial.id) / "outcome.json",
                    missing_state=JobState.LOST,
                    missing_reason="",
                )
                report.write_trial_report(rundir, spec, trial, outcome if trial.job_id else None)
            continue
        if trial.state is TrialState.PLANNED and trial.commit is None:
            job = jobs.materialize(trial)  # a rejection is recorded there
            if job:
                submit.append(job)
            continue
        job = jobs.job_spec(trial)
        if job is None:  # committed but its job file never written: make it again
            workspace.release(trial.id)
            job = jobs.materialize(trial)
            if job:
                submit.append(job)
            continue
        if trial.state is TrialState.PLANNED:
            submit.append(job)
        elif trial.state is TrialState.SUBMITTING or (trial.job_id or "").startswith("local-"):
            find.append(job)
        else:
            executor.attach(job, trial.job_id or "")
            attached += 1
    found = executor.find(find) if find else {}
    for job in find:
        if job.trial_id in found:
            row = ledger.trial(job.trial_id)
            assert row is not None
            trials.found(row, found[job.trial_id])
            executor.attach(job, found[job.trial_id])
            attached += 1
        else:
            submit.append(job)
    if submit:
        jobs.submit(submit)
    for tid in waiting:  # the controller may have died between recording an outcome and deciding
        row = ledger.trial(tid)
        if row is not None and row.state is TrialState.WAITING:
            referee.judge(row)
    ledger.write_results(rundir.results, spec.metric.name)
    log(
        f"resumed {rundir.run_id}: {len(rows)} trials in the ledger, {attached} jobs re-attached, "
        f"{len(submit)} (re)submitted, incumbent {state.incumbent.id if state.incumbent else 'none'}"
    )
