"""The referee: turns ended jobs into decisions, asking for more runs where the evidence is thin.

Over 400 lines: the referee is the one owner of decisions and of the incumbent, so every rule
that asks for more evidence (seeds, rounds, confirmations, combinations) sits beside the decision.

A job's outcome is first recorded (the trial waits), then judged: re-runs (repeats, reruns) are
evidence for another trial; a baseline waits for its seeds; a screened hypothesis waits for its
round; a full-budget candidate is kept, discarded, or sent for confirmation with new seeds. Keeps
of changes that do not contain the incumbent's queue their combination as a new trial.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Callable
from dataclasses import asdict

from .. import fidelity
from ..decide import Verdict, failed, judge, learning
from ..digest import read as read_digest
from ..evidence import noise, steps_of, thin_noise, values
from ..executors.sandbox import UNPROTECTED
from ..hypothesis import Hypothesis
from ..ledger import Ledger
from ..outcome import JobState, Outcome
from ..playbook import Playbook
from ..rundir import RunDir
from ..spec import TaskSpec
from ..trial import Decision, Trial, TrialKind, TrialState
from ..trials import Trials
from ..workspace import Workspace
from .jobs import Starter
from .models import Models
from .records import Records
from .state import RunState


class Referee:
    """Owns every decision, and the incumbent it moves: the only caller of `Trials.decided`."""

    def __init__(
        self,
        spec: TaskSpec,
        rundir: RunDir,
        ledger: Ledger,
        trials: Trials,
        state: RunState,
        jobs: Starter,
        workspace: Workspace,
        models: Models,
        playbook: Playbook,
        records: Records,
        log: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self.spec = spec
        self.rundir = rundir
        self.ledger = ledger
        self.trials = trials
        self.state = state
        self.jobs = jobs
        self.ws = workspace
        self.models = models
        self.playbook = playbook
        self.records = records
        self.log = log
        self.clock = clock

    # -- a job ended ------------------------------------------------------------------------
    def ended(self, trial: Trial, outcome: Outcome) -> None:
        """Its outcome recorded (the trial waits), then judged."""
        self.trials.measured(trial, outcome, self.spec.metric.name)
        if outcome.sandbox == UNPROTECTED:
            self._unprotected(trial, outcome)
        self.ws.release(trial.id)  # the job is over; a promotion or re-run gets its own worktree
        self.judge(trial, outcome)

    def _unprotected(self, trial: Trial, outcome: Outcome) -> None:
        """A trial that ran without a sandbox where the run expected one (another node, no bwrap):
        the run's protection becomes "none", which status and reports then say."""
        info = self.ledger.meta().get("sandbox") or {}
        if info.get("used") == UNPROTECTED:
            return
        why = f"{trial.id} ran without one on {outcome.node or 'its node'}"
        self.ledger.set_meta(sandbox={**info, "used": UNPROTECTED, "why": why})
        self.log(f"WARNING: {why}: the metric is NOT protected")

    def outcome_of(self, trial: Trial) -> Outcome:
        """A measured trial's outcome: its outcome.json, else what the ledger recorded of it."""
        path = self.rundir.trial_dir(trial.id) / "outcome.json"
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
        outcome = outcome or self.outcome_of(trial)
        verdict = failed(outcome)
        if trial.kind.is_evidence():
            steps = steps_of(trial, self.spec.budget.steps)
            verdict = verdict or Verdict(
                Decision.REPEAT, f"seed {trial.seed} at {steps} steps, evidence for {trial.of}"
            )
            self.decide(trial, verdict, outcome)
            parent = self.ledger.trial(trial.of or "")
            if parent is not None and parent.state is TrialState.WAITING:
                self.judge(parent)
            incumbent = self.state.incumbent
            ran_incumbent = incumbent is not None and trial.commit == incumbent.commit
            if ran_incumbent and parent is not None and parent.state is TrialState.DONE:
                self._judge_waiting()  # candidates racing the incumbent waited for this run
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
        if self.state.incumbent is None:
            return  # it ran beside the baseline: judged once the baseline is measured
        trials = self.ledger.measured(trial.commit, self.state.incumbent.commit)
        patch = self._patch(trial)
        verdict = judge(
            trial, trials, self.state.incumbent, self.spec, patch, confirm=self.state.may_run_more()
        )
        if verdict.decision is None:
            self.repeat(trial, verdict.confirm, verdict.reason)
            self._race(trial, verdict.race)
            return
        self.decide(trial, verdict, outcome)

    def _race(self, trial: Trial, n: int) -> None:
        """n more runs of the incumbent at the trial's steps, less those already under way (another
        candidate may be racing it too): a candidate is compared with as many incumbent runs."""
        incumbent = self.state.incumbent
        if incumbent is None or n <= 0:
            return
        steps = steps_of(trial, self.spec.budget.steps)
        n -= len(self._incumbent_runs_under_way(steps))
        if n > 0:
            rows = self.runs(incumbent, n, steps, TrialKind.REPEAT, f"racing {trial.id}", source="race")
            self.log(f"{incumbent.id} racing {trial.id}: {n} more seed(s) {', '.join(r.id for r in rows)}")

    def _incumbent_runs_under_way(self, steps: int) -> list[Trial]:
        incumbent = self.state.incumbent
        if incumbent is None:
            return []
        return [
            t
            for t in self.ledger.runs_of(incumbent.commit)
            if t.kind.is_evidence() and t.state is not TrialState.DONE
            and steps_of(t, self.spec.budget.steps) == steps
        ]

    def add_noise_runs(self, free: int) -> int:
        """Seeds of the incumbent in slots nothing else wants, while the spread has few degrees of
        freedom or the incumbent's runs look off (one far from the rest): the estimate every later
        decision leans on earns its dof beside other work, not before it. Returns the runs started."""
        incumbent = self.state.incumbent
        if incumbent is None or free <= 0 or not self.spec.noise_rule or not self.state.may_run_more():
            return 0
        steps = self.spec.full_steps
        trials = self.ledger.measured(incumbent.commit)
        spread = noise(trials, steps, self.spec.budget.steps)
        if spread.unmeasurable:
            return 0  # seeds change nothing: more runs would repeat the value
        runs = values(trials, incumbent.commit, steps, self.spec.budget.steps)
        if len(runs) + len(self._incumbent_runs_under_way(steps)) >= self.spec.decide.confirm + 1:
            return 0  # as many as any candidate gets
        why = thin_noise(spread, runs, self.spec.noise.dof)
        if not why:
            return 0
        n = min(free, self.spec.noise.dof - spread.dof) if spread.dof < self.spec.noise.dof else 1
        rows = self.runs(incumbent, n, steps, TrialKind.REPEAT, why, source="noise")
        self.log(f"{incumbent.id} {why}: {n} more seed(s) in free slots {', '.join(r.id for r in rows)}")
        return len(rows)

    def settle(self) -> None:
        """Decide what waits on nothing any more: rounds that are complete (or will never be), and,
        when no more jobs may start, trials whose confirmations will not come."""
        if self.spec.screening:
            self.promote()
        if not self.state.may_run_more():
            for trial in self.ledger.trials():
                if trial.state is TrialState.WAITING and not self._pending(trial):
                    if trial.fidelity == "screen" and not trial.kind.is_evidence():
                        continue  # promote() decides these
                    self.judge(trial)

    def _pending(self, trial: Trial) -> bool:
        """Its own re-runs are undecided, or (for a candidate) runs of the incumbent it is raced
        against at its steps are still under way."""
        if self.ledger.awaits_evidence(trial.id):
            return True
        incumbent = self.state.incumbent
        if trial.kind is TrialKind.BASELINE or incumbent is None or incumbent.id == trial.id:
            return False
        return bool(self._incumbent_runs_under_way(steps_of(trial, self.spec.budget.steps)))

    def _baseline_verdict(self, trial: Trial) -> Verdict:
        trials = self.ledger.measured(trial.commit)
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
        path = self.rundir.trial_dir(trial.id) / "patch.diff"
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
            self.log(f"{trial.id} {why}: {n} more seed(s) {', '.join(r.id for r in rows)}")
        return rows

    def runs(
        self, trial: Trial, n: int, steps: int, kind: TrialKind, why: str, request: str = "", source: str = ""
    ) -> list[Trial]:
        """n runs of the trial's commit with new seeds at `steps`, started as one batch."""
        used = [
            t.seed for t in self.ledger.runs_of(trial.commit) if steps_of(t, self.spec.budget.steps) == steps
        ]
        seed = max(used, default=self.spec.noise.seed - 1) + 1
        screen = steps == self.spec.fidelity.screen_steps and self.spec.screening
        hypothesis = Hypothesis(
            title=f"{kind.value} of {trial.id}: {trial.title}"[:200],
            rationale=why,
            source=source or kind.value,
            extra={"request": request} if request else {},
        )
        rows = [
            self.trials.planned(
                hypothesis,
                parent=trial.parent or "",
                parent_trial=trial.parent_trial,
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
        self.jobs.start(rows)
        return rows

    # -- screening rounds -------------------------------------------------------------------
    def promote(self) -> None:
        """Each complete round sends its best screened hypotheses on: to the full budget, or with
        successive halving, its better half to twice the steps, rung by rung. With `auto`, the
        plan is decided first, once the baseline's first array is measured."""
        if self.state.incumbent is None:
            return  # rounds screened beside the baseline wait for its screen score
        if self.state.fidelity is None:
            self._plan()
        trials = self.ledger.trials()
        rounds: dict[int, list[Trial]] = {}  # a round's screened hypotheses: its first rung
        rungs: dict[tuple[int, int], list[Trial]] = {}  # (round, steps): its climbers there
        for t in trials:
            if t.fidelity != "screen":
                continue
            if t.kind is TrialKind.HYPOTHESIS:
                rounds.setdefault(t.round, []).append(t)
            elif t.kind is TrialKind.PROMOTE:
                rungs.setdefault((t.round, steps_of(t, self.spec.budget.steps)), []).append(t)
        last = not self.state.may_plan()  # no more hypotheses: a partial round is complete
        for members in rounds.values():
            if len(members) < self.spec.fidelity.round_size and not last:
                continue
            self._promote_round(members, trials)
        for members in rungs.values():  # started together by the rung below: complete as they are
            self._promote_round(members, trials)

    def _plan(self) -> None:
        """`auto`: whether to screen, decided once from the cost of the jobs measured so far (the
        baseline's seeds and its run at screen_steps) and kept in the ledger for resumes."""
        trials = self.ledger.trials()
        offset = sum(1 for t in trials if t.kind is TrialKind.HYPOTHESIS)
        plan = fidelity.choose_plan(self.spec, trials, offset)
        self.state.fidelity = plan
        self.ledger.set_meta(fidelity_plan=plan.to_dict())
        self.ledger.event(self.clock(), "fidelity", plan.why)
        self.log(f"fidelity: {plan.why}")

    def _promote_round(self, members: list[Trial], trials: list[Trial]) -> None:
        """One rung of one round, once all its jobs have ended: its best go on to the next rung
        (the full budget unless halving has one between), judged against the incumbent's own runs
        at the same steps where it has any (its screen score, or its own climb)."""
        waiting = [t for t in members if t.state is TrialState.WAITING]
        if not waiting or any(t.state not in (TrialState.WAITING, TrialState.DONE) for t in members):
            return
        incumbent, plan = self.state.incumbent, self.state.fidelity
        assert incumbent is not None and plan is not None  # promote() decides an auto plan first
        rule, full = self.spec.fidelity, self.spec.full_steps
        steps = steps_of(waiting[0], self.spec.budget.steps)
        measured = sum(1 for t in waiting if t.metric is not None)
        after = fidelity.next_rung(self.spec, measured, steps, plan.halving)
        bar = values(trials, incumbent.commit, steps, self.spec.budget.steps)
        choice = fidelity.choose(waiting, bar, self.spec, keep=after.runs)
        if len(choice.promoted) <= rule.promote:  # too few beat the incumbent to halve again
            after = fidelity.next_rung(self.spec, len(choice.promoted), steps, halving=False)
        for trial in waiting:
            outcome = self.outcome_of(trial)
            reason = choice.reasons.get(trial.id, "screened out")
            if trial in choice.promoted and self.state.may_run_more():
                row = self._promotion(trial, after.steps)
                budget = "full budget" if after.steps >= full else f"{after.steps} steps"
                verdict = Verdict(Decision.PROMOTED, f"{reason}; {budget} as {row.id}")
            elif trial in choice.promoted:
                verdict = Verdict(Decision.DISCARD, f"{reason}, but no more jobs may start")
            else:
                verdict = Verdict(Decision.DISCARD, reason)
            self.decide(trial, verdict, outcome)

    def _promotion(self, trial: Trial, steps: int | None = None) -> Trial:
        """The trial's commit again at `steps` (the full budget by default): a PROMOTE row, `of`
        the screened hypothesis it climbs for, at screen fidelity while below the full budget."""
        steps = steps or self.spec.full_steps
        origin = trial.of if trial.kind is TrialKind.PROMOTE and trial.of else trial.id
        row = self.trials.planned(
            trial.hypothesis,
            parent=trial.parent or "",
            parent_trial=trial.parent_trial,
            kind=TrialKind.PROMOTE,
            of=origin,
            commit=trial.commit,
            seed=self.spec.noise.seed,
            steps=steps,
            fidelity="full" if steps >= self.spec.full_steps else "screen",
            round=trial.round,
        )
        patch = self.rundir.trial_dir(origin) / "patch.diff"
        self.jobs.start([row], patch=patch.read_text(encoding="utf-8") if patch.exists() else "")
        return row

    # -- the decision -----------------------------------------------------------------------
    def decide(self, trial: Trial, verdict: Verdict, outcome: Outcome) -> None:
        assert verdict.decision is not None
        previous = self.state.incumbent
        lesson = learning(trial, outcome, verdict, previous, self.spec.metric.name)
        summary, learned = "", lesson
        if trial.kind.is_hypothesis() or trial.kind is TrialKind.PROMOTE:
            curve = read_digest(self.rundir.trial_dir(trial.id))
            judgement = self.models.summarizer().judge(trial, outcome, verdict, previous, lesson, curve)
            self.models.flush(role="summarizer")
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
            learned = judgement.learning  # the rules' is the lesson, with what the curve says
        evidence = dict(verdict.evidence or {})
        if verdict.decision is Decision.KEEP and previous is not None:
            flag = self._holdout_flag(trial, previous, verdict)
            if flag:
                evidence["holdout_flag"] = flag
        decision = verdict.decision
        assert decision is not None  # a verdict that decides (judge() returns None while it waits)
        self.trials.decided(
            trial,
            decision,
            verdict.reason,
            evidence=evidence or None,
            learning=learned,
            summary=summary,
        )
        if verdict.decision in (Decision.KEEP, Decision.DISCARD, Decision.CRASH):
            self.playbook.add(self.rundir.run_id, [f"{trial.id} {trial.learning}"])
        if verdict.decision is Decision.KEEP:
            assert trial.commit is not None
            self.ws.keep(trial.commit)
            self.state.incumbent = trial
        self.ws.release(trial.id)
        shown = f"{outcome.metric:.6g}" if outcome.has_metric else outcome.state.value
        flag = f"; {evidence['holdout_flag']}" if "holdout_flag" in evidence else ""
        self.log(
            f"{trial.id} {decision.value}: {self.spec.metric.name}={shown} "
            f"({trial.title}; {verdict.reason}){flag}"
        )
        self.records.trial(trial, outcome)
        self._maybe_combine(trial, verdict, previous)
        if trial.kind is TrialKind.BASELINE and previous is None and verdict.decision is Decision.KEEP:
            self._judge_waiting()

    def _judge_waiting(self) -> None:
        """Hypotheses that ended beside the baseline, judged now that there is an incumbent."""
        for trial in self.ledger.in_state(TrialState.WAITING, light=False):
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
        if previous is None or trial.kind not in (TrialKind.HYPOTHESIS, TrialKind.PROMOTE):
            return
        if trial.commit is None or previous.commit is None or self.ws.contains(trial.commit, previous.commit):
            return
        if verdict.decision is Decision.KEEP:
            first, second = trial, previous  # the new incumbent lacks the old one's change
        elif verdict.decision is Decision.DISCARD and trial.parent_trial not in (None, previous.id):
            parent = self.ledger.trial(trial.parent_trial or "")
            if parent is None or self.state.incumbent is None:
                return
            runs = self.ledger.measured(trial.commit, parent.commit)
            against_parent = judge(trial, runs, parent, self.spec, confirm=False)
            if against_parent.decision is not Decision.KEEP:
                return
            first, second = self.state.incumbent, trial
        else:
            return
        self.combine(first, second)

    def combine(self, base: Trial, other: Trial) -> Trial | None:
        pair = {base.id, other.id}
        for t in self.ledger.of_kind(TrialKind.COMBINE):
            if set(t.hypothesis.extra.get("combines", [])) == pair:
                return None  # tried already
        if not self.state.may_run_more():
            self.log(f"not combining {base.id} and {other.id}: {self.state.stopping}")
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
        row = self.trials.planned(
            hypothesis,
            parent=base.commit,
            parent_trial=base.id,
            kind=TrialKind.COMBINE,
            seed=self.spec.noise.seed,
            steps=self.spec.full_steps,
            fidelity="full",
            round=base.round,
        )
        self.log(f"{row.id} planned: combine {base.id} with {other.id}")
        self.jobs.start([row])
        if row.decision is Decision.REJECTED and row.reason.startswith("merge conflicts"):
            # Left to the planner: the conflict is text it can resolve with search/replace edits.
            self.rundir.add_guidance(
                f"Combine {other.id} ({other.title}) with the incumbent: both improved on the same "
                f"parent but git cannot merge them ({row.reason}). {other.id}'s diff: "
                + json.dumps(self._patch(other)[:3000]),
                self.clock(),
            )
        return row
