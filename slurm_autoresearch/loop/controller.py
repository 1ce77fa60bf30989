"""The loop of one run: baseline, plan, materialize, submit, watch, decide, record."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import git

from .. import budget
from ..curve import Curves
from ..curve import load as load_curve
from ..curve import save as save_curve
from ..errors import BaselineError, EditError, LockLostError
from ..executors import Executor, JobSpec
from ..executors.base import JOB_FILE
from ..executors.runner import LOG_FILE
from ..hypothesis import Edit
from ..ledger import Ledger
from ..llm import LLM, Call
from ..monitor import Monitor
from ..outcome import Outcome
from ..planners import Planner
from ..playbook import Playbook
from ..rundir import RunDir, atomic_write_text, write_json
from ..safetext import error_line
from ..task import Task
from ..trial import Decision, Trial, TrialKind, TrialState
from ..views import report
from ..views.html_report import write_html_report
from ..workspace import Materialized, Workspace
from .planning import Planning
from .recovery import recover
from .referee import Referee
from .summarizer import RuleSummarizer, Summarizer

ENDING_CHECK_S = 0.25  # between polls, how often a nap looks whether a job has ended
HTML_EVERY_S = (10.0, 30.0)  # report.html is rewritten at most this often (slow ones: the longer)
Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    state: str  # finished | stopped | failed | interrupted
    reason: str
    trials: int
    incumbent: Trial | None


class Controller:
    """Owns the ledger (single writer) and the loop; collaborators are injected for tests."""

    def __init__(
        self,
        task: Task,
        rundir: RunDir,
        ledger: Ledger,
        workspace: Workspace,
        planner: Planner,
        executor: Executor,
        frozen: dict[str, str],
        *,
        summarizer: Summarizer | None = None,
        llm: LLM | None = None,
        playbook: Playbook | None = None,
        monitor: Monitor | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
        echo: Echo = print,
    ) -> None:
        self.task = task
        self.spec = task.spec
        self.rundir = rundir
        self.ledger = ledger
        self.ws = workspace
        self.planner = planner
        self.executor = executor
        self.frozen = frozen
        self.clock = clock
        self.sleep = sleep
        self.echo = echo
        self.incumbent: Trial | None = None
        self.stopping = ""  # why no more jobs start (stop request, a spent budget, crashes)
        self.exhausted = ""  # why no more hypotheses are planned (their pending re-runs still run)
        self._started = float(ledger.meta().get("created_at", clock()))  # budgets span resumes
        self._last_beat = clock()
        self._count = 0
        self._watch = executor.watch
        self.rules = RuleSummarizer(task.spec)
        self.summarizer = summarizer or self.rules
        self.llm = llm
        self.playbook = playbook or Playbook.start(rundir.playbook, None, False)
        self.monitor = monitor or Monitor(clock=clock)
        self._llm_spent = False  # an LLM budget ran out: rules only from here on
        self.early_stop: dict[str, str] = {}  # trial -> why the monitor or its curve cancelled it
        self.trailing: set[str] = set()  # cancelled because its curve trailed the incumbent's
        self.user_cancelled: set[str] = set()  # cancelled by `ara stop --cancel`: run again on resume
        self.curves = Curves.of(task.spec)
        self._html_at, self._html_cost = float("-inf"), 0.0
        self._refs: tuple[tuple[str, ...], list[list[tuple[int, float]]]] = ((), [])
        self.referee = Referee(self)
        self.planning = Planning(self)

    # -- logging ----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.clock()))
        with self.rundir.controller_log.open("a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")
        self.echo(message)

    # -- the loop ---------------------------------------------------------------------------
    def run(self, *, reruns_only: bool = False) -> RunSummary:
        """Carry the run on from whatever the ledger says, to its end (or an interruption). With
        reruns_only (`ara rerun` of a finished run), plan nothing: run the requested re-runs, and end
        finished as before."""
        state, reason, lost = "failed", "", False
        self._count = 0
        meta = self.ledger.meta()
        # Re-runs of an ended run are not the run's own time: its end stays, theirs is counted apart.
        self._own_end: float | None = meta.get("last_ended_at") if reruns_only else None
        if self._own_end is not None:
            self.ledger.set_meta(ended_at=self._own_end, rerun_since=self.clock())
        try:
            recover(self)
            if reruns_only:
                self.exhausted = "re-running on request"
                self._take_reruns()
            else:
                self._baseline()
            self._loop(budgets=not reruns_only)
            state = "stopped" if self.stopping.startswith("stopped") else "finished"
            reason = self.stopping or self.exhausted or "planner has nothing left to propose"
            if reruns_only:
                state, reason = "finished", meta.get("last_reason") or reason
        except BaselineError as exc:
            reason = str(exc)
            raise
        except KeyboardInterrupt as exc:
            # Jobs are left running and the ledger is consistent: `ara resume` carries on.
            cause = str(exc) or "Ctrl-C"  # the CLI raises it with the signal's name for SIGTERM/SIGHUP
            state = "interrupted"
            reason = f"interrupted ({cause}); running jobs left running: `ara resume {self.rundir.run_id}`"
        except LockLostError:
            lost = True  # another controller owns the run now: leave its ledger and lock alone
            raise
        except Exception as exc:
            # A failed run always says why, even when ara itself broke (its ledger, its disk).
            reason = f"{error_line(exc)}; `ara resume` carries it on"
            raise
        finally:
            if not lost:
                self._finish(state, reason)
        return RunSummary(self.rundir.run_id, state, reason, self._count, self.incumbent)

    def _tick(self) -> None:
        """One poll: stop requests, job updates, a look at running logs, the heartbeat."""
        self._check_stop_request()
        self._collect()
        self._take_reruns()
        self._watch_running()
        if self.clock() - self._last_beat >= 30.0:
            self._last_beat = self.clock()
            if not self.rundir.heartbeat():
                raise LockLostError(
                    f"{self.rundir.lock_path} names another controller now; this one stops and leaves "
                    "the run to it (its jobs go on)"
                )

    def _baseline(self) -> None:
        if not self.ledger.trials():
            base = self.ledger.meta()["base_commit"]
            hypothesis = self.planner.baseline(self.ws.surface_files(base))
            trial = self.ledger.add_trial(
                hypothesis,
                parent=base,
                parent_trial=None,
                now=self.clock(),
                kind=TrialKind.BASELINE,
                seed=self.spec.noise.seed,
                steps=self.spec.full_steps,
            )
            self.log(f"{trial.id} baseline: running the unchanged code at {base[:7]}")
            spec = self.materialize(trial)
            if spec is None:
                raise BaselineError(f"baseline {trial.id} could not be prepared: {trial.reason}")
            self.submit([spec])
            # The first array also measures the noise (more seeds) and the screen score.
            repeats = self.spec.noise.repeats - 1
            if repeats:
                self.referee.runs(trial, repeats, self.spec.full_steps, TrialKind.REPEAT, "noise estimate")
            if self.spec.screening:
                self.referee.runs(
                    trial, 1, self.spec.fidelity.screen_steps, TrialKind.REPEAT, "incumbent's screen score"
                )
        done = self.ledger.trials()[0]
        while done.decision is None:
            self._tick()  # a job that ended while no controller ran reports here
            done = self.ledger.trials()[0]
            if done.decision is not None or not self.executor.live():
                break
            self.planning.beside_baseline()
            self._nap()
        if done.decision is not Decision.KEEP and not self.stopping:
            log = self.rundir.trial_dir(done.id) / LOG_FILE
            if self.executor.live():
                self.log("cancelling the hypotheses started beside the failed baseline")
                self._cancel_all(wait_s=60.0, why=f"cancelled: baseline {done.id} failed")
            raise BaselineError(
                f"baseline {done.id} produced no metric ({done.reason}); see {log} and fix the task "
                "before searching"
            )

    def _loop(self, budgets: bool = True) -> None:
        while True:
            self._tick()
            if not self.stopping and budgets:
                self.check_budget()
            self.planning.fill()
            if self.executor.live() == 0 and not self.may_plan():
                self.referee.settle()  # a last partial round, confirmations that will not come
                if self.executor.live() == 0:
                    return
            if self.executor.live() == 0 and self.planning.paused():
                self.sleep(max(0.0, min(self.planning.paused_until - self.clock(), 60.0)))
                continue
            self._nap()

    def _nap(self) -> None:
        """Until the next poll, or sooner: when the scheduler is due another look, when a job ends
        (a cheap check every quarter second: its slot is refilled without waiting a whole poll), or
        when a free slot waits for the planner's answer."""
        wait = self.spec.run.poll_seconds
        due = getattr(self.executor, "wake_in", None)
        if due is not None:
            wait = max(0.05, min(wait, due()))
        if self.planning.busy() and self.executor.live() < self.executor.capacity:
            self.planning.wake.wait(wait)  # the answer comes from the planner's thread
            return
        ending = getattr(self.executor, "ending", None)
        deadline = self.clock() + wait
        while ending is not None and deadline - self.clock() > ENDING_CHECK_S:
            self.sleep(ENDING_CHECK_S)
            if ending():
                return
        self.sleep(max(0.0, deadline - self.clock()))

    def _take_reruns(self) -> None:
        """`ara rerun` requests: rows first (they carry the request id), then the request goes."""
        for request in self.rundir.rerun_requests():
            rid = str(request.get("id", ""))
            done = any(t.hypothesis.extra.get("request") == rid for t in self.ledger.trials())
            trial = self.ledger.trial(str(request.get("trial", "")))
            if not done and trial is not None and trial.commit and self.may_run_more():
                steps = int(request.get("steps") or trial.steps or self.spec.budget.steps)
                why = f"`ara rerun` at {steps} steps"
                rows = self.referee.runs(
                    trial, int(request.get("seeds", 1)), steps, TrialKind.RERUN, why, request=rid
                )
                self.log(f"{trial.id} re-run on request: {', '.join(r.id for r in rows)} at {steps} steps")
            elif not done and not self.may_run_more():
                continue  # a stopping run keeps the request for its resume
            self.rundir.done_request(rid)

    def may_plan(self) -> bool:
        """Whether new hypotheses may still be planned."""
        return not self.stopping and not self.exhausted

    def may_run_more(self) -> bool:
        """Whether new jobs may still start (confirmations, promotions, combinations)."""
        return not self.stopping

    def _check_stop_request(self) -> None:
        request = self.rundir.stop_requested()
        if request is None or self.stopping.startswith("stopped by"):
            return
        kind, _, by = request.partition(" ")
        cancel = kind == "cancel"
        self.stopping = f"stopped by {by or '`ara stop`'}{' --cancel' if cancel else ''}"
        self.log(self.stopping + ("; cancelling running jobs" if cancel else "; waiting for running trials"))
        if cancel:
            # Cancelled by the user, not by their own fault: they run again when the run resumes.
            self._cancel_all(wait_s=0, by_user=True)

    def _cancel_all(self, wait_s: float, why: str = "", by_user: bool = False) -> None:
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
            self._collect()
            self.sleep(0.2)
        self._collect()

    def check_budget(self) -> None:
        spending = self.ledger.spending(self.spec.budget.crash_limit)
        self._llm_spent = bool(budget.llm_spent(self.spec.budget, spending.llm_usd, spending.llm_tokens))
        self.stopping = budget.spent(self.spec.budget, spending, elapsed_s=self.clock() - self._started)
        if self.stopping:
            self.log(self.stopping + ("; waiting for running trials" if self.executor.live() else ""))
        elif not self.exhausted:
            self.exhausted = budget.trials_spent(self.spec.budget, spending.hypotheses)
            if self.exhausted:
                self.log(self.exhausted + ("; finishing what runs" if self.executor.live() else ""))

    def take_calls(self, role: str | None = None) -> list[Call]:
        return self.llm.take_calls(role) if self.llm else []

    def flush_calls(self, shares: list[str] | None = None, role: str | None = None) -> None:
        """Model calls since the last flush go to the ledger and the log, with their cost."""
        self.record_calls(self.take_calls(role), shares)

    def record_calls(self, calls: list[Call], shares: list[str] | None = None) -> None:
        if calls:
            self.ledger.add_calls(calls, shares)
            with self.rundir.controller_log.open("a", encoding="utf-8") as fh:
                fh.writelines(c.log_line() + "\n" for c in calls)

    def summarizer_now(self) -> Summarizer:
        return self.rules if self._llm_spent else self.summarizer

    # -- one trial --------------------------------------------------------------------------
    def materialize(self, trial: Trial, patch: str = "", fallback: Trial | None = None) -> JobSpec | None:
        """The trial's worktree and job file: its commit made from the hypothesis's edits, the merge
        of a combination, or (re-runs, promotions) the commit it re-runs. A hypothesis planned on an
        earlier incumbent (`fallback`) whose edits no longer apply is built on that one instead."""
        tdir = self.rundir.trial_dir(trial.id)
        tdir.mkdir(parents=True, exist_ok=True)
        h = trial.hypothesis
        write_json(tdir / "hypothesis.json", h.to_dict())
        assert trial.parent is not None
        try:
            if h.invalid:
                raise EditError(h.invalid)
            if trial.kind in (TrialKind.REPEAT, TrialKind.RERUN, TrialKind.PROMOTE):
                assert trial.commit is not None
                worktree, commit = self.ws.restore(trial.id, trial.commit), trial.commit
            elif trial.kind is TrialKind.COMBINE:
                made = self._combine(trial)
                worktree, commit, patch = made.worktree, made.commit, made.patch
            else:
                made = self._build(trial, fallback)
                worktree, commit, patch = made.worktree, made.commit, made.patch
        except EditError as exc:
            self._reject(trial, str(exc))
            return None
        except (OSError, UnicodeError, ValueError, git.GitCommandError) as exc:
            # Whatever a hypothesis makes git or the filesystem refuse ends that trial, not the run
            # (a failure of the ledger, ara's own state, is not caught here and stops it).
            self._reject(
                trial,
                f"could not be made into a commit: {error_line(exc)}",
            )
            return None
        if patch or not (tdir / "patch.diff").exists():
            atomic_write_text(tdir / "patch.diff", patch)
        full = trial.fidelity != "screen"
        spec = JobSpec(
            trial_id=trial.id,
            run_id=self.rundir.run_id,
            run_dir=str(self.rundir.path),
            trial_dir=str(tdir),
            worktree=str(worktree),
            workdir=self.task.workdir,
            command=self.spec.task.command,
            eval=self.spec.task.eval,
            metric=self.spec.metric.name,
            metric_pattern=self.spec.metric.pattern,
            steps=trial.steps or self.spec.budget.steps,
            time_limit_s=self.spec.budget.trial_minutes * 60,
            gpus=self.spec.resources.gpus_per_trial,
            frozen=self.frozen,
            project=self.spec.tracking.project or self.task.name,
            seed=trial.seed,
            title=trial.title,
            fidelity=trial.fidelity,
            wandb=self.spec.tracking.wandb,
            holdout=self.spec.task.holdout if full else None,
            pristine=str(self.rundir.frozen) if self.rundir.frozen.is_dir() else "",
            env=dict(self.spec.task.env),
            pass_env=list(self.spec.task.pass_env),
            hidden=[rel for rel in self.frozen if self.task.surface.is_hidden(rel)],
            sandbox=self.spec.sandbox.mode,
            bwrap=self.spec.sandbox.bwrap,
            network=self.spec.sandbox.network,
            hide=self.spec.sandbox.hide,
            writable=list(self.spec.sandbox.writable),
            repo=str(self.task.repo),
            git_dir=str(self.ws.git_dir),
            cpus=self.spec.resources.cpus_per_trial,
        )
        write_json(tdir / JOB_FILE, spec.to_dict())
        self.ledger.update(trial, self.clock(), event="materialized", commit=commit)
        return spec

    def _build(self, trial: Trial, fallback: Trial | None) -> Materialized:
        h = trial.hypothesis
        assert trial.parent is not None
        try:
            return self.ws.materialize(trial.id, trial.parent, list(h.edits), h.commit_message(trial.id))
        except EditError as exc:
            if fallback is None or fallback.commit is None:
                raise
            made = self.ws.materialize(trial.id, fallback.commit, list(h.edits), h.commit_message(trial.id))
            # Judged against the incumbent as any trial; a keep then queues its combination.
            self.ledger.update(trial, self.clock(), parent=fallback.commit, parent_trial=fallback.id)
            why = f"edits do not apply to the incumbent ({exc}); built on {fallback.id}, as planned"
            self.ledger.event(self.clock(), "rebased", why, trial.id)
            self.log(f"{trial.id} {why}")
            return made

    def _combine(self, trial: Trial) -> Materialized:
        """git merge of the two commits; where lines next to each other conflict, the other's own
        search/replace edits applied to the base (they fail where both changed the same text)."""
        h = trial.hypothesis
        assert trial.parent is not None
        message = h.commit_message(trial.id)
        try:
            return self.ws.combine(trial.id, trial.parent, h.extra["other"], message)
        except EditError as conflict:
            edits = [Edit(**e) for e in h.extra.get("edits", [])]
            if not edits:
                raise
            try:
                return self.ws.materialize(trial.id, trial.parent, edits, message)
            except EditError:
                raise conflict from None

    def _reject(self, trial: Trial, reason: str) -> None:
        now = self.clock()
        self.ledger.update(
            trial,
            now,
            event="rejected",
            state=TrialState.DONE,
            decision=Decision.REJECTED,
            reason=reason,
            decided_at=now,
            learning=f"{trial.title}: rejected ({reason})",
        )
        self.log(f"{trial.id} rejected: {trial.title}: {reason}")
        self.record(trial, None)

    def submit(self, specs: list[JobSpec]) -> None:
        """Record the intent first: a controller that dies inside sbatch finds the job on resume."""
        now = self.clock()
        trials = {}
        for spec in specs:
            trial = self.ledger.trial(spec.trial_id)
            assert trial is not None
            trials[spec.trial_id] = self.ledger.update(
                trial,
                now,
                event="submitting",
                state=TrialState.SUBMITTING,
                attempts=trial.attempts + 1,
                submitted_at=now,
            )
        ids = self.executor.submit(specs)
        for spec in specs:
            job_id = ids.get(spec.trial_id, "")
            trial = trials[spec.trial_id]
            if job_id:
                self._submitted(trial, job_id)
            else:
                self.log(f"{trial.id} not submitted yet (the scheduler refused it); retrying with backoff")

    def _submitted(self, trial: Trial, job_id: str) -> None:
        self.ledger.update(trial, self.clock(), event="submitted", state=TrialState.QUEUED, job_id=job_id)
        self.log(f"{trial.id} submitted ({job_id}): {trial.title}")

    def job_spec(self, trial: Trial) -> JobSpec | None:
        """The trial's job as written when it was materialized (its worktree made again if gone)."""
        path = self.rundir.trial_dir(trial.id) / JOB_FILE
        if trial.commit is None or not path.exists():
            return None
        self.ws.restore(trial.id, trial.commit)
        return JobSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))

    def _collect(self) -> None:
        updates = self.executor.poll()
        if self.executor.watch != self._watch:
            self._watch = self.executor.watch
            self.ledger.set_meta(watch=self._watch)
            self.log(f"watching jobs with {self._watch}")
        for update in updates:
            trial = self.ledger.trial(update.trial_id)
            if trial is None or trial.state.is_finished():
                continue
            now = self.clock()
            if update.state == "submitted":
                self._submitted(trial, update.job_id)
            elif update.state == "pending":
                self.ledger.update(trial, now, event="pending", pending_reason=update.note)
                self.log(f"{trial.id} pending ({update.job_id}): {update.note}")
            elif update.state == "running":
                self.ledger.update(
                    trial,
                    now,
                    event="started",
                    state=TrialState.RUNNING,
                    job_id=update.job_id,
                    started_at=now,
                    pending_reason="",
                )
            elif update.outcome is not None:
                self.referee.ended(trial, update.outcome)
        if updates and self.spec.screening:
            self.referee.promote()

    def _watch_running(self) -> None:
        """A bounded tail of each running log; the summarizer only when a rule fires; the curve."""
        for trial in self.ledger.select("state = ?", (str(TrialState.RUNNING),)):
            if trial.id in self.early_stop:
                continue
            log = self.rundir.trial_dir(trial.id) / LOG_FILE
            seen = self.monitor.look(trial.id, log)
            if self.curves is not None and self._race(trial, log):
                continue
            if seen.rule is None:
                continue
            check = self.summarizer_now().check(trial, seen.tail, seen.rule)
            self.flush_calls(role="summarizer")
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
        inc = self.incumbent
        if inc is None or inc.commit is None:
            return []
        runs = self.ledger.select("commit_sha = ? AND metric IS NOT NULL", (inc.commit,))
        ids = tuple(t.id for t in runs if (t.steps or self.spec.budget.steps) == steps)
        if self._refs[0] != ids:
            self._refs = (ids, [c for c in (load_curve(self.rundir.trial_dir(i)) for i in ids) if c])
        return self._refs[1]

    def end_curve(self, trial: Trial) -> None:
        """A job ended: the rest of its curve is read and kept for the trials that race it later."""
        if self.curves is None:
            return
        self.curves.read(trial.id, self.rundir.trial_dir(trial.id) / LOG_FILE, limit=8 << 20)
        save_curve(self.rundir.trial_dir(trial.id), self.curves.curve(trial.id))
        self.curves.forget(trial.id)

    def record(self, trial: Trial, outcome: Outcome | None) -> None:
        report.write_trial_report(self.rundir, self.spec, trial, outcome)
        self.ledger.append_result(self.rundir.results, self.spec.metric.name, trial)
        # report.html after a decision, at most every 10 s (it re-reads every trial: rewritten after
        # each decision it was a third of the controller's CPU at 200 trials), and every 30 s once
        # a rewrite costs more than 5% of that (0.7 s at 10,000 trials).
        wait = min(HTML_EVERY_S[1], max(HTML_EVERY_S[0], 20 * self._html_cost))
        if time.monotonic() - self._html_at >= wait:
            start = time.monotonic()
            write_html_report(self.rundir, self.spec, self.ledger)
            self._html_at, self._html_cost = time.monotonic(), time.monotonic() - start

    def _finish(self, state: str, reason: str) -> None:
        now = self.clock()
        try:
            # An answer on its way is waited for briefly (its tokens were spent), then dropped.
            self.planning.close(wait_s=30.0 if state in ("finished", "stopped") else 0.0)
            if self._own_end is None:
                self.ledger.set_meta(state=state, end_reason=reason, ended_at=now, rerun_since=None)
            else:
                meta = self.ledger.meta()
                spent = float(meta.get("rerun_seconds") or 0.0) + now - float(meta.get("rerun_since") or now)
                self.ledger.set_meta(state=state, end_reason=reason, rerun_seconds=spent, rerun_since=None)
            self.ledger.event(now, "run-" + state, reason)
            self.ledger.write_results(self.rundir.results, self.spec.metric.name)
            report.write_run_report(self.rundir, self.spec, self.ledger, plot=False)
            write_html_report(self.rundir, self.spec, self.ledger)
            best = self.incumbent
            summary = (
                f"best {self.spec.metric.name} {best.metric:.6g} by {best.id} ({best.title})"
                if best and best.metric is not None
                else "no incumbent"
            )
            self.log(f"run {self.rundir.run_id} {state}: {reason}; {summary}; report: {self.rundir.report}")
        finally:
            self.executor.close()  # live jobs go on; their worktrees stay for `ara resume`
            self._count = len(self.ledger.trials())
            self.ws.close()
            self.ledger.close()
            self.rundir.release()
            failed = report.plot_apart(self.rundir.path)
            if failed:
                self.echo(f"progress.png not drawn: {failed} (`ara report` draws it)")
            self._wandb_summary()

    def _wandb_summary(self) -> None:
        """The run's W&B summary run, written by its own process: wandb never loads in here. Every
        run gets one, whether or not its trials call wandb.init(): the trial table, metrics and
        decisions are ara's own to report."""
        from ..views.wandb_summary import spawn_summary

        if self.spec.tracking.wandb == "off":
            return
        try:
            proc = spawn_summary(self.rundir.path)
            if os.environ.get("SLURM_JOB_ID"):  # Slurm ends a job's processes with the job
                proc.wait(timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self.echo(f"W&B summary run not written: {exc}")
