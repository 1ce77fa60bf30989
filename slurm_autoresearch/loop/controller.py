"""The loop of one run: baseline, plan, materialize, submit, watch, decide, record.

The controller wires its collaborators once and then only sequences them: `RunState` (incumbent,
stopping, budgets), `Trials` (every step of a trial), `Jobs` (commits and submission), `Watcher`
(the executor's news, running logs, cancels), `Referee` (decisions), `Planning` (the planner's
queue) and `Records` (what people read). None of them holds the controller.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from .. import transfer
from ..errors import BaselineError, LockLostError
from ..executors import Executor
from ..ledger import Ledger
from ..llm import LLM
from ..monitor import Monitor
from ..planners import Planner
from ..playbook import Playbook
from ..rundir import LOG_FILE, RunDir
from ..safetext import error_line
from ..task import Task
from ..trial import Decision, Trial, TrialKind
from ..trials import Trials
from ..workspace import Workspace
from .jobs import Jobs
from .models import Models
from .planning import Planning
from .records import Records, RunLog
from .recovery import recover
from .referee import Referee
from .state import RunState
from .summarizer import RuleSummarizer, Summarizer
from .transfer_check import start_transfer_check
from .watcher import Watcher

ENDING_CHECK_S = 0.25  # between polls, how often a nap looks whether a job has ended
BEAT_S = 30.0  # how often the run's lock is renewed
Echo = Callable[[str], None]


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    state: str  # finished | stopped | failed | interrupted
    reason: str
    trials: int
    incumbent: Trial | None


class Controller:
    """Owns the loop; the ledger has one writer through it (`Trials`). Collaborators are injected."""

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
        self.spec = spec = task.spec
        self.rundir, self.ledger, self.ws, self.executor = rundir, ledger, workspace, executor
        self.planner = planner
        self.clock, self.sleep, self.echo = clock, sleep, echo
        self.monitor = monitor or Monitor(clock=clock)
        self.log = log = RunLog(rundir, clock, echo)
        started = float(ledger.meta().get("created_at", clock()))  # budgets span resumes
        self.state = RunState(spec, ledger, started=started, clock=clock, live=executor.live, log=log)
        self.trials = trials = Trials(ledger, clock)
        rules = RuleSummarizer(spec)
        self.models = models = Models(llm, summarizer or rules, rules, self.state, ledger, log)
        playbook = playbook or Playbook.start(rundir.playbook, None, False)
        self.records = Records(rundir, spec, ledger)
        self.jobs = Jobs(task, rundir, ledger, trials, workspace, executor, frozen, self.records, log)
        self.referee = Referee(
            spec,
            rundir,
            ledger,
            trials,
            self.state,
            self.jobs,
            workspace,
            models,
            playbook,
            self.records,
            log,
            clock,
        )
        self.watcher = Watcher(
            spec,
            rundir,
            ledger,
            trials,
            executor,
            self.jobs,
            self.referee,
            self.monitor,
            models,
            self.state,
            log,
            clock=clock,
            sleep=sleep,
        )
        self.planning = Planning(
            task,
            rundir,
            ledger,
            trials,
            self.state,
            planner,
            self.jobs,
            executor,
            workspace,
            models,
            playbook,
            log,
            clock,
        )
        self._last_beat = clock()
        self._own_end: float | None = None

    # -- the loop ---------------------------------------------------------------------------
    def run(self, *, reruns_only: bool = False) -> RunSummary:
        """Carry the run on from whatever the ledger says, to its end (or an interruption). With
        reruns_only (`ara rerun` of a finished run), plan nothing: run the requested re-runs, and end
        finished as before."""
        state, reason, lost, count = "failed", "", False, 0
        meta = self.ledger.meta()
        # Re-runs of an ended run are not the run's own time: its end stays, theirs is counted apart.
        self._own_end = meta.get("last_ended_at") if reruns_only else None
        if self._own_end is not None:
            self.ledger.set_meta(ended_at=self._own_end, rerun_since=self.clock())
        try:
            recover(
                spec=self.spec,
                rundir=self.rundir,
                ledger=self.ledger,
                trials=self.trials,
                state=self.state,
                jobs=self.jobs,
                executor=self.executor,
                workspace=self.ws,
                referee=self.referee,
                log=self.log,
            )
            if reruns_only:
                self.state.exhausted = "re-running on request"
                self._take_reruns()
            else:
                self._baseline()
            self._loop(searching=not reruns_only)
            run = self.state
            state = "stopped" if run.stopping.startswith("stopped") else "finished"
            reason = run.stopping or run.exhausted or "planner has nothing left to propose"
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
                count = self._finish(state, reason)
        return RunSummary(self.rundir.run_id, state, reason, count, self.state.incumbent)

    def _tick(self) -> None:
        """One poll: stop requests, job updates, a look at running logs, the heartbeat."""
        self._check_stop_request()
        self.watcher.collect()
        self._take_reruns()
        self.watcher.look()
        if self.clock() - self._last_beat >= BEAT_S:
            self._last_beat = self.clock()
            if not self.rundir.heartbeat():
                raise LockLostError(
                    f"{self.rundir.lock_path} names another controller now; this one stops and leaves "
                    "the run to it (its jobs go on)"
                )

    def _baseline(self) -> None:
        if not self.ledger.trials():
            base = self.ledger.meta()["base_commit"]
            trial = self.trials.planned(
                self.planner.baseline(self.ws.surface_files(base)),
                parent=base,
                parent_trial=None,
                kind=TrialKind.BASELINE,
                seed=self.spec.noise.seed,
                steps=self.spec.full_steps,
            )
            self.log(f"{trial.id} baseline: running the unchanged code at {base[:7]}")
            spec = self.jobs.materialize(trial)
            if spec is None:
                raise BaselineError(f"baseline {trial.id} could not be prepared: {trial.reason}")
            self.jobs.submit([spec])
            # The first array also measures the noise (more seeds) and the screen score.
            full, screen = self.spec.full_steps, self.spec.fidelity.screen_steps
            if self.spec.noise.repeats > 1:
                self.referee.runs(
                    trial, self.spec.noise.repeats - 1, full, TrialKind.REPEAT, "noise estimate"
                )
            if self.spec.screening:
                # with auto, this run and the seeds are what the cost model is fitted on
                why = "start-up and per-step cost, " if self.spec.fidelity.auto else ""
                self.referee.runs(trial, 1, screen, TrialKind.REPEAT, why + "incumbent's screen score")
        done = self.ledger.trials()[0]
        while done.decision is None:
            self._tick()  # a job that ended while no controller ran reports here
            done = self.ledger.trials()[0]
            if done.decision is not None or not self.executor.live():
                break
            self.planning.beside_baseline()
            self._nap()
        if done.decision is not Decision.KEEP and not self.state.stopping:
            log = self.rundir.trial_dir(done.id) / LOG_FILE
            if self.executor.live():
                self.log("cancelling the hypotheses started beside the failed baseline")
                self.watcher.cancel_all(wait_s=60.0, why=f"cancelled: baseline {done.id} failed")
            raise BaselineError(
                f"baseline {done.id} produced no metric ({done.reason}); see {log} and fix the task "
                "before searching"
            )

    def _loop(self, searching: bool = True) -> None:
        while True:
            self._tick()
            if not self.state.stopping and searching:
                self.state.check_budget()
            self.planning.fill()
            free = self.executor.capacity - self.executor.live()
            if free > 0 and searching and self.state.may_plan() and not self.planning.busy():
                self.referee.add_noise_runs(free)  # slots the planner left idle
            if self.executor.live() == 0 and not self.state.may_plan():
                self.referee.settle()  # a last partial round, confirmations that will not come
                if self.executor.live() == 0 and not (searching and self._transfer()):
                    return
            if self.executor.live() == 0 and self.planning.paused():
                self.sleep(max(0.0, min(self.planning.paused_until - self.clock(), 60.0)))
                continue
            self._nap()

    def _transfer(self) -> bool:
        return start_transfer_check(self.spec, self.ledger, self.state, self.referee, self.log)

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
            if not done and trial is not None and trial.commit and self.state.may_run_more():
                steps = int(request.get("steps") or trial.steps or self.spec.budget.steps)
                why = f"`ara rerun` at {steps} steps"
                rows = self.referee.runs(
                    trial, int(request.get("seeds", 1)), steps, TrialKind.RERUN, why, request=rid
                )
                self.log(f"{trial.id} re-run on request: {', '.join(r.id for r in rows)} at {steps} steps")
            elif not done and not self.state.may_run_more():
                continue  # a stopping run keeps the request for its resume
            self.rundir.done_request(rid)

    def _check_stop_request(self) -> None:
        request = self.rundir.stop_requested()
        if request is None or self.state.stopping.startswith("stopped by"):
            return
        kind, _, by = request.partition(" ")
        cancel = kind == "cancel"
        why = f"stopped by {by or '`ara stop`'}{' --cancel' if cancel else ''}"
        self.state.stopping = why
        self.log(why + ("; cancelling running jobs" if cancel else "; waiting for running trials"))
        if cancel:
            # Cancelled by the user, not by their own fault: they run again when the run resumes.
            self.watcher.cancel_all(wait_s=0, by_user=True)

    # -- the end ----------------------------------------------------------------------------
    def _finish(self, state: str, reason: str) -> int:
        """The run's end in the ledger and its reports; returns how many trials it holds."""
        now, count = self.clock(), 0
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
            check = transfer.of_run(self.ledger.trials(), self.spec) if self.spec.transfer.top else None
            if check is not None:
                self.log(check.line())
            self.records.run()
            best = self.state.incumbent
            summary = (
                f"best {self.spec.metric.name} {best.metric:.6g} by {best.id} ({best.title})"
                if best and best.metric is not None
                else "no incumbent"
            )
            self.log(f"run {self.rundir.run_id} {state}: {reason}; {summary}; report: {self.rundir.report}")
        finally:
            self.executor.close()  # live jobs go on; their worktrees stay for `ara resume`
            count = len(self.ledger.trials())
            self.ws.close()
            self.ledger.close()
            self.rundir.release()
            self.records.apart(self.echo)
        return count
