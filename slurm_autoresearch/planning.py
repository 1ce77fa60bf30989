"""Planning: asking the planner for as many hypotheses as there are free slots and budget, with
what it sees (history, incumbent files, guidance), and pausing while its API is down."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from . import budget
from .planners import PlanContext
from .planners.base import PlannerUnavailable, history
from .trial import Trial, TrialKind

if TYPE_CHECKING:
    from .controller import Controller

FAILURES_TO_STOP = 5


class Planning:
    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        self.failures = 0
        self.paused_until = 0.0
        self.guidance_offset = 0
        self.files: tuple[str, dict[str, str]] | None = None  # the incumbent's editable files

    def paused(self) -> bool:
        return self.ctl.clock() < self.paused_until

    def fill(self) -> None:
        """Keep every slot busy: plan as many hypotheses as there are free slots and budget."""
        ctl = self.ctl
        while ctl.may_plan():
            trials = ctl.ledger.trials()
            free = ctl.executor.capacity - ctl.executor.live()
            left = ctl.spec.budget.trials - budget.hypotheses(trials)
            n = min(free, left)
            if n <= 0:
                return
            if ctl.clock() < self.paused_until:
                return
            ctx = self.context(trials, left)
            try:
                hypotheses = ctl.planner.propose(ctx, n)[:n]
            except PlannerUnavailable as exc:
                ctl.flush_calls()
                self.pause(str(exc))
                return
            self.failures = 0
            degraded = getattr(ctl.planner, "degraded", "")
            if degraded:
                ctl.log(f"planner API failed ({degraded}); this round comes from the offline planner")
            if ctx.guidance and ctl.planner.name != "offline":
                ctl.ledger.set_meta(guidance_offset=self.guidance_offset)
                ctl.ledger.event(ctl.clock(), "guidance-read", ctx.guidance.strip()[:2000])
            if not hypotheses:
                ctl.flush_calls()
                ctl.exhausted = "planner has nothing left to propose"
                ctl.log(
                    "planner has nothing left to propose"
                    + ("; waiting for running trials" if ctl.executor.live() else "")
                )
                return
            specs, created = [], []
            screen = ctl.spec.screening
            planned = [t for t in trials if t.kind is TrialKind.HYPOTHESIS]
            rounds = max((t.round for t in trials), default=0) + 1
            for i, hypothesis in enumerate(hypotheses):
                parent = ctl.incumbent
                assert parent is not None and parent.commit is not None
                trial = ctl.ledger.add_trial(
                    hypothesis,
                    parent=parent.commit,
                    parent_trial=parent.id,
                    now=ctl.clock(),
                    seed=ctl.spec.noise.seed,
                    steps=ctl.spec.fidelity.screen_steps if screen else ctl.spec.full_steps,
                    fidelity="screen" if screen else "full",
                    # screened hypotheses are compared in rounds of round_size, whatever the slots
                    round=(len(planned) + i) // ctl.spec.fidelity.round_size + 1 if screen else rounds,
                )
                created.append(trial.id)
                spec = ctl.materialize(trial)
                if spec:
                    specs.append(spec)
            ctl.flush_calls(shares=created)  # a planning call's cost is shared by what it proposed
            if specs:
                ctl.submit(specs)
            ctl.check_budget()

    def pause(self, reason: str) -> None:
        ctl = self.ctl
        self.failures += 1
        wait = min(30.0 * 2 ** (self.failures - 1), 600.0)
        self.paused_until = ctl.clock() + wait
        ctl.ledger.event(ctl.clock(), "planner-unavailable", reason)
        ctl.log(f"planner unavailable ({reason}); pausing planning for {wait:.0f} s")
        if self.failures >= FAILURES_TO_STOP:
            ctl.stopping = f"stopped: the planner failed {self.failures} rounds in a row ({reason})"
            ctl.log(ctl.stopping)

    def context(self, trials: list[Trial], left: int) -> PlanContext:
        ctl = self.ctl
        assert ctl.incumbent is not None and ctl.incumbent.commit is not None
        commit = ctl.incumbent.commit
        if self.files is None or self.files[0] != commit:
            self.files = (commit, ctl.ws.surface_files(commit))
        offset = int(ctl.ledger.meta().get("guidance_offset", 0))
        guidance, self.guidance_offset = ctl.rundir.guidance_from(offset)
        limit = ctl.spec.budget
        notes = []
        if limit.gpu_hours:
            used = sum(t.gpu_seconds or 0 for t in trials) / 3600
            notes.append(f"GPU-hours {limit.gpu_hours - used:.2f} of {limit.gpu_hours:g} left.")
        if limit.llm_usd:
            notes.append(f"LLM dollars {limit.llm_usd - ctl.ledger.llm_totals()[0]:.2f} left.")
        return PlanContext(
            ctl.task,
            history(trials),
            replace(ctl.incumbent, holdout=None),
            self.files[1],
            left,
            guidance,
            playbook=ctl.playbook.initial,
            budget_note=" ".join(notes),
        )
