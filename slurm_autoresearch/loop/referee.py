"""The referee: turns ended jobs into decisions, asking for more runs where the evidence is thin.

A job's outcome is first recorded (the trial waits), then judged: re-runs (repeats, reruns) are
evidence for another trial; a baseline waits for its seeds; a screened hypothesis waits for its
round; a full-budget candidate is kept, discarded, or sent for confirmation with new seeds. Keeps
of changes that do not contain the incumbent's queue their combination as a new trial.
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict
from typing import TYPE_CHECKING

from .. import fidelity
from ..decide import Verdict, failed, judge, learning
from ..evidence import noise, steps_of, values
from ..executors.base import JobSpec
from ..executors.sandbox import UNPROTECTED
from ..hypothesis import Hypothesis
from ..outcome import JobState, Outcome
from ..trial import Decision, Trial, TrialKind, TrialState

if TYPE_CHECKING:
    from .controller import Controller


class Referee:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.spec = ctl.spec

    # -- a job ended ------------------------------------------------------------------------
    def ended(self, trial: Trial, outcome: Outcome) -> None:
        ctl = self.ctl
        if outcome.state.is_infrastructure() and trial.attempts <= self.spec.budget.max_retries:
            spec = ctl.job_spec(trial)
            if spec is not None:  # the machinery failed, not the trial: run it again
                ctl.ledger.event(ctl.clock(), "retry", f"{outcome.state.value}: {outcome.reason}", trial.id)
                ctl.log(
                    f"{trial.id} {outcome.state.value} ({outcome.reason}); retry {trial.attempts} of "
                    f"{self.spec.budget.max_retries}"
                )
                ctl.submit([spec])
                return
        if outcome.state is JobState.CANCELLED and trial.id in ctl.user_cancelled:
            # Not evidence about the idea: planned again, so `ara resume` runs it (the baseline too).
            ctl.user_cancelled.discard(trial.id)
            ctl.monitor.forget(trial.id)
            ctl.ledger.update(
                trial,
                ctl.clock(),
                event="cancelled-by-user",
                state=TrialState.PLANNED,
                job_id=None,
                job_state=None,
                reason="cancelled by `ara stop --cancel`; runs again when the run resumes",
            )
            ctl.log(f"{trial.id} cancelled by the user; it runs again on `ara resume`")
            return
        early = ctl.early_stop.pop(trial.id, "")
        if early and outcome.state is JobState.CANCELLED:
            outcome.reason = early
            if trial.id in ctl.trailing:
                outcome.state = JobState.STOPPED
        ctl.trailing.discard(trial.id)
        ctl.monitor.forget(trial.id)
        ctl.end_curve(trial)
        ctl.ledger.update(
            trial,
            ctl.clock(),
            event="measured",
            state=TrialState.WAITING,
            reason=outcome.reason,
            metric=outcome.metric if outcome.has_metric else None,
            metrics=outcome.metrics,
            holdout=outcome.holdout.get(self.spec.metric.name),
            job_state=str(outcome.state),
            elapsed=outcome.elapsed,
            gpu_seconds=outcome.gpu_seconds,
            memory_gb=outcome.memory_gb,
            node=outcome.node or None,
            job_started_at=outcome.started_at,
            job_ended_at=outcome.ended_at,
            finished_at=ctl.clock(),
        )
        if outcome.sandbox == UNPROTECTED:
            self._unprotected(trial, outcome)
        ctl.ws.release(trial.id)  # the job is over; a promotion or re-run gets its own worktree
        self.judge(trial, outcome)

    def _unprotected(self, trial: Trial, outcome: Outcome) -> None:
        """A trial that ran without a sandbox where the run expected one (another node, no bwrap):
        the run's protection becomes "none", which status and reports then say."""
        info = self.ctl.ledger.meta().get("sandbox") or {}
        if info.get("used") == UNPROTECTED:
            return
        why = f"{trial.id} ran without one on {outcome.node or 'its node'}"
        self.ctl.ledger.set_meta(sandbox={**info, "used": UNPROTECTED, "why": why})
        self.ctl.log(f"WARNING: {why}: the metric is NOT protected")

    def outcome_of(self, trial: Trial) -> Outcome:
        """A measured trial's outcome: its outcome.json, else what the ledger recorded of it."""
        path = self.ctl.rundir.trial_dir(trial.id) / "outcome.json"
        found = Outcome.read(path, missing_state=JobState.LOST, missing_reason="")
        if found.state is not JobState.LOST or not trial.job_state:
            return found
        return Outcome(
            state=JobState(trial.job_state),
            metric=trial.metric,
            metrics=trial.metrics or {},
            elapsed=trial.elapsed or 0.0,
            gpu_seconds=trial.gpu_seconds or 0.0,
            memory_gb=trial.memory_gb,
            reason=trial.reason,
            node=trial.node or "",
            started_at=trial.job_started_at,
            ended_at=trial.job_ended_at,
        )

    # -- judging ----------------------------------------------------------------------------
    def judge(self, trial: Trial, outcome: Outcome | None = None) -> None:
        """Decide a waiting trial, or leave it waiting for the evidence it still needs."""
        ctl = self.ctl
        outcome = outcome or self.outcome_of(trial)
        verdict = failed(outcome)
        if trial.kind.is_evidence():
            steps = steps_of(trial, self.spec.budget.steps)
            verdict = verdict or Verdict(
                Decision.REPEAT, f"seed {trial.seed} at {steps} steps, evidence for {trial.of}"
            )
            self.decide(trial, verdict, outcome)
            parent = ctl.ledger.trial(trial.of or "")
            if parent is not None and parent.state is TrialState.WAITING:
                self.judge(parent)
            return
        if verdict is not None:
            if trial.kind is TrialKind.BASELINE and self._pending(trial):
                return  # its seeds finish first, so the run ends with every trial decided
            self.decide(trial, verdict, outcome)
            return
        if self._pending(trial) or trial.fidelity == "screen":
            return  # its confirmations are running / it is judged with its round
        if trial.kind is TrialKind.BASELINE:
            self.decide(trial, self._baseline_verdict(trial), outcome)
            return
        if ctl.incumbent is None:
            return  # it ran beside the baseline: judged once the baseline is measured
        trials = ctl.ledger.measured(trial.commit, ctl.incumbent.commit)
        patch = self._patch(trial)
        verdict = judge(trial, trials, ctl.incumbent, self.spec, patch, confirm=ctl.may_run_more())
        if verdict.decision is None:
            self.repeat(trial, verdict.confirm, verdict.reason)
            return
        self.decide(trial, verdict, outcome)

    def settle(self) -> None:
        """Decide what waits on nothing any more: rounds that are complete (or will never be), and,
        when no more jobs may start, trials whose confirmations will not come."""
        ctl = self.ctl
        if self.spec.screening:
            self.promote()
        if not ctl.may_run_more():
            for trial in ctl.ledger.trials():
                if trial.state is TrialState.WAITING and not self._pending(trial):
                    if trial.fidelity == "screen" and not trial.kind.is_evidence():
                        continue  # promote() decides these
                    self.judge(trial)

    def _pending(self, trial: Trial) -> bool:
        return self.ctl.ledger.awaits_evidence(trial.id)

    def _baseline_verdict(self, trial: Trial) -> Verdict:
        trials = self.ctl.ledger.measured(trial.commit)
        steps = steps_of(trial, self.spec.budget.steps)
        runs = values(trials, trial.commit, steps, self.spec.budget.steps)
        spread = noise(trials, steps, self.spec.budget.steps)
        evidence = {"candidate": runs, "candidate_mean": statistics.fmean(runs), "steps": steps}
        evidence |= {"sigma": spread.sigma, "dof": spread.dof}
        if len(runs) > 1:
            reason = (
                f"baseline: mean of {len(runs)} seeds {statistics.fmean(runs):.6g}, run-to-run sd "
                f"{spread.sigma:.4g}; becomes the incumbent"
            )
        else:
            reason = "first result: becomes the incumbent"
        return Verdict(Decision.KEEP, reason, None, evidence)

    def _patch(self, trial: Trial) -> str:
        path = self.ctl.rundir.trial_dir(trial.id) / "patch.diff"
        try:
            return path.read_text(encoding="utf-8")
        except OSError:
            return ""

    # -- more evidence ----------------------------------------------------------------------
    def repeat(self, trial: Trial, n: int, why: str, kind: TrialKind = TrialKind.REPEAT) -> list[Trial]:
        """n new-seed runs of the trial's commit at its steps; the trial waits for them."""
        steps = steps_of(trial, self.spec.budget.steps)
        rows = self.runs(trial, n, steps, kind, why)
        if rows:
            self.ctl.log(f"{trial.id} {why}: {n} more seed(s) {', '.join(r.id for r in rows)}")
        return rows

    def runs(
        self, trial: Trial, n: int, steps: int, kind: TrialKind, why: str, request: str = ""
    ) -> list[Trial]:
        ctl = self.ctl
        used = [
            t.seed
            for t in ctl.ledger.select("commit_sha = ?", (trial.commit,))
            if steps_of(t, self.spec.budget.steps) == steps
        ]
        seed = max(used, default=self.spec.noise.seed - 1) + 1
        screen = steps == self.spec.fidelity.screen_steps and self.spec.screening
        hypothesis = Hypothesis(
            title=f"{kind.value} of {trial.id}: {trial.title}"[:200],
            rationale=why,
            source=kind.value,
            extra={"request": request} if request else {},
        )
        rows = [
            ctl.ledger.add_trial(
                hypothesis,
                parent=trial.parent or "",
                parent_trial=trial.parent_trial,
                now=ctl.clock(),
                kind=kind,
                of=trial.id,
                commit=trial.commit,
                seed=seed + i,
                steps=steps,
                fidelity="screen" if screen else "full",
                round=trial.round,
            )
            for i in range(n)
        ]
        specs = [s for s in (ctl.materialize(r) for r in rows) if s is not None]
        if specs:
            ctl.submit(specs)
        return rows

    # -- screening rounds -------------------------------------------------------------------
    def promote(self) -> None:
        """Each complete round sends its best screened hypotheses on to the full budget."""
        ctl = self.ctl
        if ctl.incumbent is None:
            return  # rounds screened beside the baseline wait for its screen score
        trials = ctl.ledger.trials()
        rounds: dict[int, list[Trial]] = {}
        for t in trials:
            if t.kind is TrialKind.HYPOTHESIS and t.fidelity == "screen":
                rounds.setdefault(t.round, []).append(t)
        last = not ctl.may_plan()  # no more hypotheses: a partial round is complete
        for members in rounds.values():
            waiting = [t for t in members if t.state is TrialState.WAITING]
            if not waiting or any(t.state not in (TrialState.WAITING, TrialState.DONE) for t in members):
                continue
            if len(members) < self.spec.fidelity.round_size and not last:
                continue
            self._promote_round(waiting, trials)

    def _promote_round(self, waiting: list[Trial], trials: list[Trial]) -> None:
        ctl = self.ctl
        incumbent = ctl.incumbent
        assert incumbent is not None
        screen = values(trials, incumbent.commit, self.spec.fidelity.screen_steps, self.spec.budget.steps)
        choice = fidelity.choose(waiting, screen, self.spec)
        for trial in waiting:
            outcome = self.outcome_of(trial)
            reason = choice.reasons.get(trial.id, "screened out")
            if trial in choice.promoted and ctl.may_run_more():
                row = self._promotion(trial)
                verdict = Verdict(Decision.PROMOTED, f"{reason}; full budget as {row.id}")
            elif trial in choice.promoted:
                verdict = Verdict(Decision.DISCARD, f"{reason}, but no more jobs may start")
            else:
                verdict = Verdict(Decision.DISCARD, reason)
            self.decide(trial, verdict, outcome)

    def _promotion(self, trial: Trial) -> Trial:
        ctl = self.ctl
        row = ctl.ledger.add_trial(
            trial.hypothesis,
            parent=trial.parent or "",
            parent_trial=trial.parent_trial,
            now=ctl.clock(),
            kind=TrialKind.PROMOTE,
            of=trial.id,
            commit=trial.commit,
            seed=self.spec.noise.seed,
            steps=self.spec.full_steps,
            fidelity="full",
            round=trial.round,
        )
        patch = ctl.rundir.trial_dir(trial.id) / "patch.diff"
        spec = ctl.materialize(row, patch=patch.read_text(encoding="utf-8") if patch.exists() else "")
        if spec is not None:
            ctl.submit([spec])
        return row

    # -- the decision -----------------------------------------------------------------------
    def decide(self, trial: Trial, verdict: Verdict, outcome: Outcome) -> None:
        ctl = self.ctl
        assert verdict.decision is not None
        now = ctl.clock()
        previous = ctl.incumbent
        lesson = learning(trial, outcome, verdict, previous, self.spec.metric.name)
        summary, learned = "", lesson
        if trial.kind.is_hypothesis() or trial.kind is TrialKind.PROMOTE:
            judgement = ctl.summarizer_now().judge(trial, outcome, verdict, previous, lesson)
            ctl.flush_calls(role="summarizer")
            # Guardrail: the summarizer may veto a keep, never keep what the metric did not earn;
            # and never the baseline's, which is what everything else is compared with.
            vetoed = (
                verdict.decision is Decision.KEEP and judgement.advice == "revert" and previous is not None
            )
            if self.spec.decide.by == "summarizer" and vetoed:
                verdict = Verdict(
                    Decision.DISCARD,
                    f"reverted on the summarizer's advice: {judgement.reason}",
                    verdict.delta,
                    verdict.evidence,
                )
                lesson = learning(trial, outcome, verdict, previous, self.spec.metric.name)
            summary = judgement.summary
            learned = judgement.learning if judgement.by != "rules" else lesson
        evidence = dict(verdict.evidence or {})
        if verdict.decision is Decision.KEEP and previous is not None:
            flag = self._holdout_flag(trial, previous, verdict)
            if flag:
                evidence["holdout_flag"] = flag
        ctl.ledger.update(
            trial,
            now,
            event="decided",
            state=TrialState.DONE,
            decision=verdict.decision,
            reason=verdict.reason,
            evidence=evidence or None,
            decided_at=now,
            learning=learned,
            summary=summary,
        )
        if verdict.decision in (Decision.KEEP, Decision.DISCARD, Decision.CRASH):
            ctl.playbook.add(ctl.rundir.run_id, [f"{trial.id} {trial.learning}"])
        calls = getattr(ctl.executor, "sacct_calls", None)
        if calls is not None:  # for the sacct-rate figure in benchmarks
            ctl.ledger.set_meta(sacct_calls=calls, sacct_calls_at=now)
        if verdict.decision is Decision.KEEP:
            assert trial.commit is not None
            ctl.ws.keep(trial.commit)
            ctl.incumbent = trial
        ctl.ws.release(trial.id)
        shown = f"{outcome.metric:.6g}" if outcome.has_metric else outcome.state.value
        flag = f"; {evidence['holdout_flag']}" if "holdout_flag" in evidence else ""
        ctl.log(
            f"{trial.id} {verdict.decision.value}: {self.spec.metric.name}={shown} "
            f"({trial.title}; {verdict.reason}){flag}"
        )
        ctl.record(trial, outcome)
        self._maybe_combine(trial, verdict, previous)
        if trial.kind is TrialKind.BASELINE and previous is None and verdict.decision is Decision.KEEP:
            self._judge_waiting()

    def _judge_waiting(self) -> None:
        """Hypotheses that ended beside the baseline, judged now that there is an incumbent."""
        ctl = self.ctl
        for trial in ctl.ledger.select("state = ?", (str(TrialState.WAITING),), light=False):
            if not trial.kind.is_evidence() and trial.kind is not TrialKind.BASELINE:
                self.judge(trial)

    def _holdout_flag(self, trial: Trial, previous: Trial, verdict: Verdict) -> str:
        """A keep whose holdout result disagrees with its evaluation beyond the margin."""
        if trial.holdout is None or previous.holdout is None or verdict.delta is None:
            return ""
        goal = self.spec.metric.goal
        held = trial.holdout - previous.holdout if goal == "max" else previous.holdout - trial.holdout
        margin = float((verdict.evidence or {}).get("margin") or 0.0)
        if abs(held - verdict.delta) > margin or held <= 0 < verdict.delta:
            return (
                f"holdout disagrees: {held:+.4g} on the holdout vs {verdict.delta:+.4g} on the "
                f"evaluation (margin {margin:.4g})"
            )
        return ""

    # -- combinations -----------------------------------------------------------------------
    def _maybe_combine(self, trial: Trial, verdict: Verdict, previous: Trial | None) -> None:
        """Two changes from one parent that each improved on it: their merge must earn its keep."""
        ctl = self.ctl
        if previous is None or trial.kind not in (TrialKind.HYPOTHESIS, TrialKind.PROMOTE):
            return
        if trial.commit is None or previous.commit is None or ctl.ws.contains(trial.commit, previous.commit):
            return
        if verdict.decision is Decision.KEEP:
            first, second = trial, previous  # the new incumbent lacks the old one's change
        elif verdict.decision is Decision.DISCARD and trial.parent_trial not in (None, previous.id):
            parent = ctl.ledger.trial(trial.parent_trial or "")
            if parent is None or ctl.incumbent is None:
                return
            runs = ctl.ledger.measured(trial.commit, parent.commit)
            against_parent = judge(trial, runs, parent, self.spec, confirm=False)
            if against_parent.decision is not Decision.KEEP:
                return
            first, second = ctl.incumbent, trial
        else:
            return
        self.combine(first, second)

    def combine(self, base: Trial, other: Trial) -> Trial | None:
        ctl = self.ctl
        pair = {base.id, other.id}
        for t in ctl.ledger.select("kind = ?", (str(TrialKind.COMBINE),), light=False):
            if set(t.hypothesis.extra.get("combines", [])) == pair:
                return None  # tried already
        if not ctl.may_run_more():
            ctl.log(f"not combining {base.id} and {other.id}: {ctl.stopping}")
            return None
        hypothesis = Hypothesis(
            title=f"Combine {base.id} and {other.id}",
            rationale=(
                f"{base.id} ({base.title}) and {other.id} ({other.title}) each improved on their "
                "parent; their merge may keep both gains."
            ),
            source="combine",
            extra={
                "combines": [base.id, other.id],
                "other": other.commit,
                "edits": [asdict(e) for e in other.hypothesis.edits],  # if git cannot merge
            },
        )
        assert base.commit is not None
        row = ctl.ledger.add_trial(
            hypothesis,
            parent=base.commit,
            parent_trial=base.id,
            now=ctl.clock(),
            kind=TrialKind.COMBINE,
            seed=self.spec.noise.seed,
            steps=self.spec.full_steps,
            fidelity="full",
            round=base.round,
        )
        ctl.log(f"{row.id} planned: combine {base.id} with {other.id}")
        spec: JobSpec | None = ctl.materialize(row)
        if spec is not None:
            ctl.submit([spec])
        elif row.reason.startswith("merge conflicts"):
            # Left to the planner: the conflict is text it can resolve with search/replace edits.
            ctl.rundir.add_guidance(
                f"Combine {other.id} ({other.title}) with the incumbent: both improved on the same "
                f"parent but git cannot merge them ({row.reason}). {other.id}'s diff: "
                + json.dumps(self._patch(other)[:3000]),
                ctl.clock(),
            )
        return row
