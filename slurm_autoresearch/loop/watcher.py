"""Watching jobs: the executor's updates onto trials, bounded looks at running logs, early stops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from .. import digest
from ..curve import Curves, finished
from ..curve import load as load_curve
from ..curve import save as save_curve
from ..executors import Executor
from ..ledger import Ledger
from ..monitor import Monitor
from ..outcome import JobState, Outcome
from ..rundir import LOG_FILE, RunDir
from ..spec import TaskSpec
from ..trial import Trial, TrialKind, TrialState
from ..trials import Trials
from .jobs import Jobs
from .models import Models
from .records import RunLog
from .referee import Referee
from .state import RunState


def keep_digest(spec: TaskSpec, trial_dir: Path) -> None:
    """A finished job's curves, read bounded from its log, as digest.json (no curve: none)."""
    curves = spec.curves
    train, val = finished(trial_dir / LOG_FILE, [curves.train, spec.curves_val])
    summary = digest.summarize(
        train,
        val,
        train_name=curves.train,
        train_goal=curves.train_goal,
        val_name=spec.curves_val,
        val_goal=spec.curves_val_goal,
    )
    digest.write(trial_dir, summary)


class Watcher:
    """One poll's work on live jobs; the only place that cancels one, and remembers why."""

    def __init__(
        self,
        spec: TaskSpec,
        rundir: RunDir,
        ledger: Ledger,
        trials: Trials,
        executor: Executor,
        jobs: Jobs,
        referee: Referee,
        monitor: Monitor,
        models: Models,
        state: RunState,
        log: RunLog,
        *,
        clock: Callable[[], float],
        sleep: Callable[[float], None],
    ) -> None:
        self.spec = spec
        self.rundir = rundir
        self.ledger = ledger
        self.trials = trials
        self.executor = executor
        self.jobs = jobs
        self.referee = referee
        self.monitor = monitor
        self.models = models
        self.state = state
        self.log = log
        self.clock = clock
        self.sleep = sleep
        self.curves = Curves.of(spec)
        self.early_stop: dict[str, str] = {}  # trial -> why the monitor or its curve cancelled it
        self.trailing: set[str] = set()  # cancelled because its curve trailed the incumbent's
        self.user_cancelled: set[str] = set()  # cancelled by `ara stop --cancel`: run again on resume
        self._watch = executor.watch
        self._refs: tuple[tuple[str, ...], list[list[tuple[int, float]]]] = ((), [])

    # -- the executor's news ----------------------------------------------------------------
    def collect(self) -> None:
        updates = self.executor.poll()
        if self.executor.watch != self._watch:
            self._watch = self.executor.watch
            self.ledger.set_meta(watch=self._watch)
            self.log(f"watching jobs with {self._watch}")
        ended = False
        for update in updates:
            trial = self.ledger.trial(update.trial_id)
            if trial is None or not trial.state.is_live():
                continue  # news of a job whose trial has moved on (decided, or planned again)
            if update.state == "submitted":
                self.jobs.submitted(trial, update.job_id)
            elif update.state == "pending":
                self.trials.pending(trial, update.note)
                self.log(f"{trial.id} pending ({update.job_id}): {update.note}")
            elif update.state == "running":
                self.trials.started(trial, update.job_id)
            elif update.outcome is not None:
                self.ended(trial, update.outcome)
                ended = True
        calls = getattr(self.executor, "sacct_calls", None)
        if ended and calls is not None:  # for the sacct-rate figure in benchmarks
            self.ledger.set_meta(sacct_calls=calls, sacct_calls_at=self.clock())
        if updates and self.spec.screening:
            self.referee.promote()

    def ended(self, trial: Trial, outcome: Outcome) -> None:
        """A job is over: run it again if the machinery failed, plan it again if the user cancelled
        it, else say why it was stopped early and hand it to the referee."""
        if outcome.state.is_infrastructure() and trial.attempts <= self.spec.budget.max_retries:
            spec = self.jobs.job_spec(trial)
            if spec is not None:  # the machinery failed, not the trial: run it again
                self.ledger.event(self.clock(), "retry", f"{outcome.state.value}: {outcome.reason}", trial.id)
                self.log(
                    f"{trial.id} {outcome.state.value} ({outcome.reason}); retry {trial.attempts} of "
                    f"{self.spec.budget.max_retries}"
                )
                self.jobs.submit([spec])
                return
        if outcome.state is JobState.CANCELLED and trial.id in self.user_cancelled:
            # Not evidence about the idea: planned again, so `ara resume` runs it (the baseline too).
            self.user_cancelled.discard(trial.id)
            self.monitor.forget(trial.id)
            self.trials.cancelled_by_user(trial)
            self.log(f"{trial.id} cancelled by the user; it runs again on `ara resume`")
            return
        early = self.early_stop.pop(trial.id, "")
        if early and outcome.state is JobState.CANCELLED:
            outcome.reason = early
            if trial.id in self.trailing:
                outcome.state = JobState.STOPPED
        self.trailing.discard(trial.id)
        self.monitor.forget(trial.id)
        self._end_curve(trial)
        self.referee.ended(trial, outcome)

    # -- running logs -----------------------------------------------------------------------
    def look(self) -> None:
        """A bounded tail of each running log; the summarizer only when a rule fires; the curve."""
        for trial in self.ledger.in_state(TrialState.RUNNING):
            if trial.id in self.early_stop:
                continue
            log = self.rundir.trial_dir(trial.id) / LOG_FILE
            seen = self.monitor.look(trial.id, log)
            if self.curves is not None and self._race(trial, log):
                continue
            if seen.rule is None:
                continue
            check = self.models.summarizer().check(trial, seen.tail, seen.rule)
            self.models.flush(role="summarizer")
            note = f"{check.health.value}: {check.note} ({check.by})"
            self.ledger.event(self.clock(), "health", note, trial=trial.id)
            self.log(f"{trial.id} {note}" + ("; cancelling it" if check.action == "cancel" else ""))
            if check.action == "cancel":
                self.early_stop[trial.id] = f"cancelled by the monitor: {check.health.value}: {check.note}"
                self.executor.cancel(trial.id)

    def _race(self, trial: Trial, log: Path) -> bool:
        """Read the trial's new progress lines; cancel it when its curve diverges, or (a new idea,
        not a re-run) when it trails the incumbent's at the same step. True when it was cancelled."""
        assert self.curves is not None
        new = self.curves.read(trial.id, log)
        if not new:
            return False
        steps = trial.steps or self.spec.budget.steps
        racing = trial.kind in (TrialKind.HYPOTHESIS, TrialKind.COMBINE, TrialKind.PROMOTE)
        stop = self.curves.judge(trial.id, new, steps, self._reference(steps) if racing else [])
        if stop is None:
            return False
        self.ledger.event(self.clock(), "early-stop", stop.reason, trial=trial.id)
        self.log(f"{trial.id} {stop.reason}; cancelling it")
        self.early_stop[trial.id] = stop.reason
        if not stop.diverged:
            self.trailing.add(trial.id)
        self.executor.cancel(trial.id)
        return True

    def _reference(self, steps: int) -> list[list[tuple[int, float]]]:
        """The incumbent's curves: every measured run of its commit at this step budget."""
        inc = self.state.incumbent
        if inc is None or inc.commit is None:
            return []
        runs = self.ledger.runs_of(inc.commit, measured=True)
        ids = tuple(t.id for t in runs if (t.steps or self.spec.budget.steps) == steps)
        if self._refs[0] != ids:
            self._refs = (ids, [c for c in (load_curve(self.rundir.trial_dir(i)) for i in ids) if c])
        return self._refs[1]

    def _end_curve(self, trial: Trial) -> None:
        """A job ended: its digest is written for the planner, the summarizer and the reports; the
        rest of its racing curve is read and kept for the trials that race it later."""
        keep_digest(self.spec, self.rundir.trial_dir(trial.id))
        if self.curves is None:
            return
        self.curves.read(trial.id, self.rundir.trial_dir(trial.id) / LOG_FILE, limit=8 << 20)
        save_curve(self.rundir.trial_dir(trial.id), self.curves.curve(trial.id))
        self.curves.forget(trial.id)

    # -- cancelling -------------------------------------------------------------------------
    def cancel_all(self, wait_s: float, why: str = "", by_user: bool = False) -> None:
        """Cancel every live job (`why` becomes its trial's reason), waiting up to wait_s for the ends."""
        for trial in self.ledger.trials():
            if trial.state.is_live():
                if why:
                    self.early_stop[trial.id] = why
                if by_user:
                    self.user_cancelled.add(trial.id)
                self.executor.cancel(trial.id)
        deadline = self.clock() + wait_s
        while wait_s and self.executor.live() and self.clock() < deadline:
            self.collect()
            self.sleep(0.2)
        self.collect()
