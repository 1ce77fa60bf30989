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

from typing import TYPE_CHECKING

from ..executors.base import JobSpec
from ..outcome import JobState, Outcome
from ..trial import Decision, TrialState
from ..views import report

if TYPE_CHECKING:
    from .controller import Controller


def recover(ctl: Controller) -> None:
    trials = ctl.ledger.trials()
    if not trials:
        return
    stale = ctl.ws.clear_stale_locks()  # a git killed with the controller left these behind
    if stale:
        ctl.log(f"removed {len(stale)} stale git lock files: {', '.join(stale)}")
    kept = sorted((t for t in trials if t.decision is Decision.KEEP), key=lambda t: t.decided_at or 0)
    if kept:
        ctl.incumbent = kept[-1]
        if kept[-1].commit:
            ctl.ws.keep(kept[-1].commit)  # a decision recorded before the branch moved
    submit: list[JobSpec] = []
    find: list[JobSpec] = []
    attached = 0
    waiting: list[str] = []
    for trial in trials:
        if trial.state is TrialState.WAITING:
            ctl.ws.release(trial.id)
            waiting.append(trial.id)
            continue
        if trial.state is TrialState.DONE:
            ctl.ws.release(trial.id)
            if not (ctl.rundir.trial_dir(trial.id) / "report.md").exists():
                outcome = Outcome.read(
                    ctl.rundir.trial_dir(trial.id) / "outcome.json",
                    missing_state=JobState.LOST,
                    missing_reason="",
                )
                report.write_trial_report(ctl.rundir, ctl.spec, trial, outcome if trial.job_id else None)
            continue
        if trial.state is TrialState.PLANNED and trial.commit is None:
            spec = ctl.materialize(trial)  # a rejection is recorded there
            if spec:
                submit.append(spec)
            continue
        spec = ctl.job_spec(trial)
        if spec is None:  # committed but its job file never written: make it again
            ctl.ws.release(trial.id)
            spec = ctl.materialize(trial)
            if spec:
                submit.append(spec)
            continue
        if trial.state is TrialState.PLANNED:
            submit.append(spec)
        elif trial.state is TrialState.SUBMITTING or (trial.job_id or "").startswith("local-"):
            find.append(spec)
        else:
            ctl.executor.attach(spec, trial.job_id or "")
            attached += 1
    found = ctl.executor.find(find) if find else {}
    for spec in find:
        if spec.trial_id in found:
            trial = ctl.ledger.trial(spec.trial_id)
            assert trial is not None
            ctl.ledger.update(
                trial, ctl.clock(), event="found", state=TrialState.QUEUED, job_id=found[spec.trial_id]
            )
            ctl.executor.attach(spec, found[spec.trial_id])
            attached += 1
        else:
            submit.append(spec)
    if submit:
        ctl.submit(submit)
    for tid in waiting:  # the controller may have died between recording an outcome and deciding
        trial = ctl.ledger.trial(tid)
        if trial is not None and trial.state is TrialState.WAITING:
            ctl.referee.judge(trial)
    ctl.ledger.write_results(ctl.rundir.results, ctl.spec.metric.name)
    ctl.log(
        f"resumed {ctl.rundir.run_id}: {len(trials)} trials in the ledger, {attached} jobs re-attached, "
        f"{len(submit)} (re)submitted, incumbent {ctl.incumbent.id if ctl.incumbent else 'none'}"
    )
