"""The loop of one run: baseline, plan, materialize, submit, watch, decide, record."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from . import report
from .decide import Verdict, decide
from .errors import BaselineError, EditError
from .executors import Executor, JobSpec
from .executors.base import JOB_FILE
from .executors.runner import LOG_FILE
from .ledger import Ledger
from .llm import LLM
from .monitor import Monitor
from .outcome import JobState, Outcome
from .planners import PlanContext, Planner
from .planners.base import PlannerUnavailable
from .playbook import Playbook
from .rundir import RunDir, atomic_write_text, write_json
from .summarizer import RuleSummarizer, Summarizer
from .task import Task
from .trial import Decision, Trial, TrialState
from .workspace import Workspace

_PLANNER_FAILURES_TO_STOP = 5

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
        self.stopping = ""  # why no more trials are planned
        self.exhausted = False
        self._files: tuple[str, dict[str, str]] | None = None
        self._started = clock()
        self._count = 0
        self._watch = executor.watch
        self.rules = RuleSummarizer(task.spec)
        self.summarizer = summarizer or self.rules
        self.llm = llm
        self.playbook = playbook or Playbook.start(rundir.playbook, None, False)
        self.monitor = monitor or Monitor(clock=clock)
        self._llm_spent = False  # an LLM budget ran out: rules only from here on
        self._planner_failures = 0
        self._planner_paused_until = 0.0
        self._early_stop: dict[str, str] = {}  # trial -> why the monitor cancelled it
        self._guidance_offset = 0
        self._llm_spent_reason = ""

    # -- logging ----------------------------------------------------------------------------
    def log(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.clock()))
        with self.rundir.controller_log.open("a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")
        self.echo(message)

    # -- the loop ---------------------------------------------------------------------------
    def run(self) -> RunSummary:
        state, reason = "failed", ""
        self._count = 0
        try:
            self._baseline()
            self._loop()
            state = "stopped" if self.stopping.startswith("stopped") else "finished"
            reason = self.stopping or "planner has nothing left to propose"
        except BaselineError as exc:
            reason = str(exc)
            raise
        except KeyboardInterrupt as exc:
            cause = str(exc) or "Ctrl-C"  # the CLI raises it with the signal's name for SIGTERM/SIGHUP
            state, reason = "interrupted", f"interrupted ({cause}): running jobs cancelled"
            self._cancel_all(wait_s=15.0)
        finally:
            self._finish(state, reason)
        return RunSummary(self.rundir.run_id, state, reason, self._count, self.incumbent)

    def _baseline(self) -> None:
        base = self.ledger.meta()["base_commit"]
        hypothesis = self.planner.baseline(self.ws.surface_files(base))
        trial = self.ledger.add_trial(hypothesis, parent=base, parent_trial=None, now=self.clock())
        self.log(f"{trial.id} baseline: running the unchanged code at {base[:7]}")
        spec = self._materialize(trial)
        if spec is None:
            raise BaselineError(f"baseline {trial.id} could not be prepared: {trial.reason}")
        self._submit([spec])
        while self.executor.live():
            self._check_stop_request()
            self._collect()
            self._watch_running()
            if self.executor.live():
                self.sleep(self.spec.run.poll_seconds)
        done = self.ledger.trial(trial.id)
        assert done is not None
        if done.decision is not Decision.KEEP and not self.stopping:
            log = self.rundir.trial_dir(trial.id) / LOG_FILE
            raise BaselineError(
                f"baseline {trial.id} produced no metric ({done.reason}); see {log} and fix the task "
                "before searching"
            )

    def _loop(self) -> None:
        while True:
            self._check_stop_request()
            self._collect()
            self._watch_running()
            if not self.stopping:
                self._check_budget()
            if not self.stopping and not self.exhausted:
                self._fill()
            if self.executor.live() == 0 and (self.stopping or self.exhausted):
                return
            if self.executor.live() == 0 and self.clock() < self._planner_paused_until:
                self.sleep(max(0.0, min(self._planner_paused_until - self.clock(), 60.0)))
                continue
            self.sleep(self.spec.run.poll_seconds)

    def _check_stop_request(self) -> None:
        request = self.rundir.stop_requested()
        if request is None or self.stopping.startswith("stopped by"):
            return
        self.stopping = f"stopped by `ara stop`{' --cancel' if request == 'cancel' else ''}"
        self.log(
            self.stopping
            + ("; cancelling running jobs" if request == "cancel" else "; waiting for running trials")
        )
        if request == "cancel":
            self._cancel_all(wait_s=0)

    def _cancel_all(self, wait_s: float) -> None:
        for trial in self.ledger.trials():
            if trial.state.is_live():
                self.executor.cancel(trial.id)
        deadline = self.clock() + wait_s
        while wait_s and self.executor.live() and self.clock() < deadline:
            self._collect()
            self.sleep(0.2)
        self._collect()

    def _check_budget(self) -> None:
        trials = self.ledger.trials()
        limit = self.spec.budget
        if len(trials) >= limit.trials:
            self.stopping = f"trial budget spent ({len(trials)}/{limit.trials})"
        elif limit.wall_hours and self.clock() - self._started >= limit.wall_hours * 3600:
            self.stopping = f"wall-clock budget spent ({limit.wall_hours:g} h)"
        elif limit.gpu_hours and sum(t.gpu_seconds or 0 for t in trials) >= limit.gpu_hours * 3600:
            self.stopping = f"GPU budget spent ({limit.gpu_hours:g} GPU-hours)"
        elif self._llm_budget_spent():
            self.stopping = self._llm_spent_reason
        else:
            streak = 0
            for trial in sorted((t for t in trials if t.decided_at), key=lambda t: t.decided_at or 0):
                streak = streak + 1 if trial.decision and trial.decision.is_failure() else 0
            if streak >= limit.crash_limit:
                self.stopping = (
                    f"stopped: {streak} trials in a row crashed or were rejected "
                    f"(crash_limit = {limit.crash_limit}); see `ara status`"
                )
        if self.stopping:
            self.log(self.stopping + ("; waiting for running trials" if self.executor.live() else ""))

    def _llm_budget_spent(self) -> bool:
        limit = self.spec.budget
        if not (limit.llm_usd or limit.llm_tokens):
            return False
        usd, tokens = self.ledger.llm_totals()
        if limit.llm_usd and usd >= limit.llm_usd:
            self._llm_spent_reason = f"LLM budget spent (${usd:.4f} of ${limit.llm_usd:g})"
        elif limit.llm_tokens and tokens >= limit.llm_tokens:
            self._llm_spent_reason = f"LLM token budget spent ({tokens} of {limit.llm_tokens})"
        else:
            return False
        self._llm_spent = True
        return True

    def _flush_calls(self, shares: list[str] | None = None) -> None:
        """Model calls since the last flush go to the ledger and the log, with their cost."""
        if self.llm is None:
            return
        calls = self.llm.take_calls()
        if not calls:
            return
        self.ledger.add_calls(calls, shares)
        with self.rundir.controller_log.open("a", encoding="utf-8") as fh:
            for c in calls:
                fh.write(
                    f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(c.at))} llm {c.role} {c.model}"
                    f"{' ' + c.trial if c.trial else ''}: request {c.request_bytes} B, in {c.input_tokens} "
                    f"+ cache write {c.cache_write_tokens} + cache read {c.cache_read_tokens}, out "
                    f"{c.output_tokens}, ${c.cost_usd:.5f}, {c.duration_s:.1f} s"
                    f"{', stop ' + c.stop_reason if c.stop_reason else ''}"
                    f"{', error ' + c.error if c.error else ''}\n"
                )

    def _summarizer(self) -> Summarizer:
        return self.rules if self._llm_spent else self.summarizer

    def _fill(self) -> None:
        """Keep every slot busy: plan as many hypotheses as there are free slots and budget."""
        while not self.stopping:
            trials = self.ledger.trials()
            free = self.executor.capacity - self.executor.live()
            left = self.spec.budget.trials - len(trials)
            n = min(free, left)
            if n <= 0:
                return
            if self.clock() < self._planner_paused_until:
                return
            ctx = self._context(trials, left)
            try:
                hypotheses = self.planner.propose(ctx, n)[:n]
            except PlannerUnavailable as exc:
                self._flush_calls()
                self._planner_paused(str(exc))
                return
            self._planner_failures = 0
            degraded = getattr(self.planner, "degraded", "")
            if degraded:
                self.log(f"planner API failed ({degraded}); this round comes from the offline planner")
            if ctx.guidance and self.planner.name != "offline":
                self.ledger.set_meta(guidance_offset=self._guidance_offset)
                self.ledger.event(self.clock(), "guidance-read", ctx.guidance.strip()[:2000])
            if not hypotheses:
                self._flush_calls()
                self.exhausted = True
                self.log(
                    "planner has nothing left to propose"
                    + ("; waiting for running trials" if self.executor.live() else "")
                )
                return
            specs, created = [], []
            for hypothesis in hypotheses:
                parent = self.incumbent
                assert parent is not None and parent.commit is not None
                trial = self.ledger.add_trial(
                    hypothesis, parent=parent.commit, parent_trial=parent.id, now=self.clock()
                )
                created.append(trial.id)
                spec = self._materialize(trial)
                if spec:
                    specs.append(spec)
            self._flush_calls(shares=created)  # a planning call's cost is shared by what it proposed
            if specs:
                self._submit(specs)
            self._check_budget()

    def _planner_paused(self, reason: str) -> None:
        self._planner_failures += 1
        wait = min(30.0 * 2 ** (self._planner_failures - 1), 600.0)
        self._planner_paused_until = self.clock() + wait
        self.ledger.event(self.clock(), "planner-unavailable", reason)
        self.log(f"planner unavailable ({reason}); pausing planning for {wait:.0f} s")
        if self._planner_failures >= _PLANNER_FAILURES_TO_STOP:
            self.stopping = f"stopped: the planner failed {self._planner_failures} rounds in a row ({reason})"
            self.log(self.stopping)

    def _context(self, trials: list[Trial], left: int) -> PlanContext:
        assert self.incumbent is not None and self.incumbent.commit is not None
        commit = self.incumbent.commit
        if self._files is None or self._files[0] != commit:
            self._files = (commit, self.ws.surface_files(commit))
        offset = int(self.ledger.meta().get("guidance_offset", 0))
        guidance, self._guidance_offset = self.rundir.guidance_from(offset)
        budget = self.spec.budget
        notes = []
        if budget.gpu_hours:
            used = sum(t.gpu_seconds or 0 for t in trials) / 3600
            notes.append(f"GPU-hours {budget.gpu_hours - used:.2f} of {budget.gpu_hours:g} left.")
        if budget.llm_usd:
            notes.append(f"LLM dollars {budget.llm_usd - self.ledger.llm_totals()[0]:.2f} left.")
        return PlanContext(
            self.task,
            trials,
            self.incumbent,
            self._files[1],
            left,
            guidance,
            playbook=self.playbook.initial,
            budget_note=" ".join(notes),
        )

    # -- one trial --------------------------------------------------------------------------
    def _materialize(self, trial: Trial) -> JobSpec | None:
        tdir = self.rundir.trial_dir(trial.id)
        tdir.mkdir(parents=True, exist_ok=True)
        h = trial.hypothesis
        write_json(tdir / "hypothesis.json", h.to_dict())
        assert trial.parent is not None
        try:
            if h.invalid:
                raise EditError(h.invalid)
            made = self.ws.materialize(trial.id, trial.parent, list(h.edits), h.commit_message(trial.id))
        except EditError as exc:
            self._reject(trial, str(exc))
            return None
        atomic_write_text(tdir / "patch.diff", made.patch)
        spec = JobSpec(
            trial_id=trial.id,
            run_id=self.rundir.run_id,
            run_dir=str(self.rundir.path),
            trial_dir=str(tdir),
            worktree=str(made.worktree),
            workdir=self.task.workdir,
            command=self.spec.task.command,
            eval=self.spec.task.eval,
            metric=self.spec.metric.name,
            steps=self.spec.budget.steps,
            time_limit_s=self.spec.budget.trial_minutes * 60,
            gpus=self.spec.resources.gpus_per_trial,
            frozen=self.frozen,
            project=self.task.name,
        )
        write_json(tdir / JOB_FILE, spec.to_dict())
        self.ledger.update(trial, self.clock(), event="materialized", commit=made.commit)
        return spec

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
        self._record(trial, None)

    def _submit(self, specs: list[JobSpec]) -> None:
        ids = self.executor.submit(specs)
        now = self.clock()
        for spec in specs:
            trial = self.ledger.trial(spec.trial_id)
            assert trial is not None
            self.ledger.update(
                trial,
                now,
                event="submitted",
                state=TrialState.QUEUED,
                job_id=ids[spec.trial_id],
                submitted_at=now,
            )
            self.log(f"{trial.id} submitted ({ids[spec.trial_id]}): {trial.title}")

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
            if update.state == "running":
                self.ledger.update(
                    trial,
                    now,
                    event="started",
                    state=TrialState.RUNNING,
                    job_id=update.job_id,
                    started_at=now,
                )
            elif update.outcome is not None:
                self._decide(trial, update.outcome)

    def _watch_running(self) -> None:
        """A bounded tail of each running log; the summarizer only when a rule fires."""
        for trial in self.ledger.trials():
            if trial.state is not TrialState.RUNNING or trial.id in self._early_stop:
                continue
            seen = self.monitor.look(trial.id, self.rundir.trial_dir(trial.id) / LOG_FILE)
            if seen.rule is None:
                continue
            check = self._summarizer().check(trial, seen.tail, seen.rule)
            self._flush_calls()
            note = f"{check.health.value}: {check.note} ({check.by})"
            self.ledger.event(self.clock(), "health", note, trial=trial.id)
            self.log(f"{trial.id} {note}" + ("; cancelling it" if check.action == "cancel" else ""))
            if check.action == "cancel":
                self._early_stop[trial.id] = f"cancelled by the monitor: {check.health.value}: {check.note}"
                self.executor.cancel(trial.id)

    def _decide(self, trial: Trial, outcome: Outcome) -> None:
        now = self.clock()
        best = self.incumbent.metric if self.incumbent else None
        verdict = decide(outcome, best, self.spec.metric.goal, self.spec.metric.min_delta)
        if trial.id in self._early_stop and outcome.state is JobState.CANCELLED:
            verdict = Verdict(Decision.CRASH, self._early_stop.pop(trial.id))
        learning = self._learning(trial, outcome, verdict)
        judgement = self._summarizer().judge(trial, outcome, verdict, self.incumbent, learning)
        self._flush_calls()
        # Guardrail: the summarizer may veto a keep, never keep what the metric did not earn; and
        # never the baseline's, which is what everything else is compared with.
        vetoed = verdict.decision is Decision.KEEP and judgement.advice == "revert" and best is not None
        if self.spec.decide.by == "summarizer" and vetoed:
            verdict = Verdict(
                Decision.DISCARD, f"reverted on the summarizer's advice: {judgement.reason}", verdict.delta
            )
            learning = self._learning(trial, outcome, verdict)
        self.monitor.forget(trial.id)
        self.ledger.update(
            trial,
            now,
            event="decided",
            state=TrialState.DONE,
            decision=verdict.decision,
            reason=verdict.reason,
            metric=outcome.metric if outcome.has_metric else None,
            metrics=outcome.metrics,
            job_state=str(outcome.state),
            elapsed=outcome.elapsed,
            gpu_seconds=outcome.gpu_seconds,
            memory_gb=outcome.memory_gb,
            node=outcome.node or None,
            job_started_at=outcome.started_at,
            job_ended_at=outcome.ended_at,
            finished_at=now,
            decided_at=now,
            learning=judgement.learning if judgement.by != "rules" else learning,
            summary=judgement.summary,
        )
        if verdict.decision is not Decision.REJECTED:
            self.playbook.add(self.rundir.run_id, [f"{trial.id} {trial.learning}"])
        calls = getattr(self.executor, "sacct_calls", None)
        if calls is not None:
            self.ledger.set_meta(sacct_calls=calls, sacct_calls_at=now)
        if verdict.decision is Decision.KEEP:
            assert trial.commit is not None
            self.ws.keep(trial.commit)
            self.incumbent = trial
        self.ws.release(trial.id)
        shown = f"{outcome.metric:.6g}" if outcome.has_metric else outcome.state.value
        self.log(
            f"{trial.id} {verdict.decision.value}: {self.spec.metric.name}={shown} "
            f"({trial.title}; {verdict.reason})"
        )
        self._record(trial, outcome)

    def _learning(self, trial: Trial, outcome: Outcome, verdict: Verdict) -> str:
        if verdict.decision is Decision.CRASH:
            return f"{trial.title}: crashed ({outcome.reason or outcome.state.value})"
        against = f" vs {self.incumbent.id}" if self.incumbent else ""
        delta = f" ({verdict.delta:+.4g}{against})" if verdict.delta is not None else ""
        return (
            f"{trial.title}: {self.spec.metric.name} {outcome.metric:.4g}{delta} -> {verdict.decision.value}"
        )

    def _record(self, trial: Trial, outcome: Outcome | None) -> None:
        report.write_trial_report(self.rundir, self.spec, trial, outcome)
        self.ledger.write_results(self.rundir.results, self.spec.metric.name)

    def _finish(self, state: str, reason: str) -> None:
        now = self.clock()
        try:
            self.ledger.set_meta(state=state, end_reason=reason, ended_at=now)
            self.ledger.event(now, "run-" + state, reason)
            self.ledger.write_results(self.rundir.results, self.spec.metric.name)
            report.write_run_report(self.rundir, self.spec, self.ledger)
            best = self.incumbent
            summary = (
                f"best {self.spec.metric.name} {best.metric:.6g} by {best.id} ({best.title})"
                if best and best.metric is not None
                else "no incumbent"
            )
            self.log(f"run {self.rundir.run_id} {state}: {reason}; {summary}; report: {self.rundir.report}")
        finally:
            self.executor.close()
            trials = self.ledger.trials()
            self._count = len(trials)
            for trial in trials:
                if not trial.state.is_finished():
                    self.ws.release(trial.id)
            self.ws.close()
            self.ledger.close()
            self.rundir.release()
