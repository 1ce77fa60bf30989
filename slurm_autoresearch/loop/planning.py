"""Planning: a queue of ready hypotheses refilled in the background while jobs run, so a freed slot
starts a trial at once; what the planner sees; pausing while its API is down."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from ..hypothesis import Hypothesis
from ..planners import PlanContext
from ..planners.base import PlannerUnavailable, history
from ..trial import Trial, TrialKind

if TYPE_CHECKING:
    from .controller import Controller

FAILURES_TO_STOP = 5


@dataclass(frozen=True)
class _Share:
    """Each hypothesis's share of the planner calls that proposed it (charged once it is a trial)."""

    usd: float = 0.0
    tokens: int = 0


@dataclass(frozen=True)
class Ahead:
    """A hypothesis planned before a slot was free, and what its planner knew."""

    hypothesis: Hypothesis
    parent: Trial  # the incumbent it was planned against
    seen: frozenset[str]  # hypotheses whose decisions the planner saw
    planned_at: float
    share: _Share


@dataclass
class _Request:
    future: Future[list[Hypothesis]]
    ctx: PlanContext
    n: int
    seen: frozenset[str]
    at: float


class Planning:
    """Owns the planner: one request at a time runs on a worker thread (the planner never touches the
    ledger; the controller thread builds its context and turns its answers into trials)."""

    def __init__(self, ctl: Controller) -> None:
        self.ctl = ctl
        run = ctl.spec.run
        self.batch = run.schedule == "batch"
        # How many hypotheses wait ready for a free slot (0: plan only when one is free).
        ahead = run.plan_ahead if run.plan_ahead is not None else ctl.executor.capacity
        self.depth = 0 if self.batch else ahead
        self.ready: deque[Ahead] = deque()
        self.request: _Request | None = None
        self.dry = False  # the planner said it has nothing left; what is ready still runs
        self.failures = 0
        self.paused_until = 0.0
        self.guidance_offset = 0
        self.files: tuple[str, dict[str, str]] | None = None  # the incumbent's editable files
        self.cpu_s = 0.0  # the planner's own CPU time (its thread), for the overhead benchmark
        self.wake = threading.Event()  # set when an answer arrives: the loop need not sleep on
        self._pool: ThreadPoolExecutor | None = None

    def paused(self) -> bool:
        return self.ctl.clock() < self.paused_until

    def busy(self) -> bool:
        """A request is out (the loop waits on `wake` rather than sleeping a whole poll)."""
        return self.request is not None

    # -- the loop's one call ----------------------------------------------------------------
    def fill(self) -> None:
        """Start ready hypotheses in free slots, collect the planner's answer, ask for more."""
        ctl = self.ctl
        if not ctl.may_plan():
            self.drop("no more hypotheses are planned")
            return
        self._collect()
        self._start()
        if self.dry and not self.ready and self.request is None and not ctl.exhausted:
            ctl.exhausted = "planner has nothing left to propose"
            ctl.log(ctl.exhausted + ("; waiting for running trials" if ctl.executor.live() else ""))
            return
        self._ask()
        if self.depth == 0 and self.request is not None:
            self.wait()  # synchronous planning: the answer starts jobs in this same call
            self._collect()
            self._start()

    def wait(self, timeout: float | None = None) -> None:
        if self.request is not None:
            self.request.future.exception(timeout=timeout)

    def drop(self, why: str) -> None:
        """Ready hypotheses that will not run (the run stops or its budget is spent)."""
        if self.ready:
            self.ctl.log(f"{len(self.ready)} hypotheses planned ahead are not run: {why}")
        self.ready.clear()  # their calls are in the ledger: budgets count them

    def close(self, wait_s: float = 0.0) -> None:
        """At the run's end: an answer on its way is waited for up to wait_s; every planner call
        made reaches the ledger, shared by the trials its answer became."""
        if self.request is not None and wait_s > 0:
            with contextlib.suppress(Exception):
                self.wait(wait_s)
        if self.request is not None and self.request.future.done():
            with contextlib.suppress(Exception):
                self._collect()
        self.drop("the run ends")
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
        self.ctl.flush_calls(role="planner")

    # -- asking -----------------------------------------------------------------------------
    def _wanted(self, left: int) -> int:
        ctl = self.ctl
        free = ctl.executor.capacity - ctl.executor.live()
        if self.batch:
            # The synchronous loop: a new round only when every job of the last one has ended.
            return min(left, ctl.executor.capacity) if ctl.executor.live() == 0 else 0
        want = free + self.depth - len(self.ready)
        # Refill in batches: ask when the queue is at most half full, so each call carries several.
        if self.ready and len(self.ready) > self.depth // 2 and free <= len(self.ready):
            return 0
        return max(0, min(want, left))

    def _ask(self) -> None:
        ctl = self.ctl
        if self.request is not None or self.dry or self.paused():
            return
        # Counted in SQL: asked every poll, while trials are parsed only when planning.
        left = ctl.spec.budget.trials - ctl.ledger.hypotheses() - len(self.ready)
        n = self._wanted(left)
        if n <= 0:
            return
        trials = ctl.ledger.trials()
        ctx = self.context(trials, left)
        seen = frozenset(t.id for t in ctx.trials if t.decision is not None)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ara-planner")
        self.wake.clear()
        future = self._pool.submit(self._propose, ctx, n)
        future.add_done_callback(lambda _f: self.wake.set())
        self.request = _Request(future, ctx, n, seen, ctl.clock())

    def _propose(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        start = time.thread_time()
        try:
            return self.ctl.planner.propose(ctx, n)[:n]
        finally:
            self.cpu_s += time.thread_time() - start

    def _collect(self) -> None:
        """The planner's answer, once it has come: into the ready queue, or a pause."""
        ctl = self.ctl
        request = self.request
        if request is None or not request.future.done():
            return
        self.request = None
        try:
            hypotheses = request.future.result()
        except PlannerUnavailable as exc:
            ctl.flush_calls(role="planner")
            self.pause(str(exc))
            return
        self.failures = 0
        degraded = getattr(ctl.planner, "degraded", "")
        if degraded:
            ctl.log(f"planner API failed ({degraded}); this round comes from the offline planner")
        if request.ctx.guidance and ctl.planner.name != "offline":
            ctl.ledger.set_meta(guidance_offset=self.guidance_offset)
            ctl.ledger.event(ctl.clock(), "guidance-read", request.ctx.guidance.strip()[:2000])
        if not hypotheses:
            ctl.flush_calls(role="planner")
            self.dry = True
            return
        parent = request.ctx.incumbent
        assert parent is not None
        # The calls reach the ledger now (budgets see them at once); each trial made from this
        # answer is charged its share when it is made.
        calls = ctl.take_calls("planner")
        ctl.record_calls(calls)
        share = _Share(
            sum(c.cost_usd for c in calls) / len(hypotheses), sum(c.tokens for c in calls) // len(hypotheses)
        )
        for h in hypotheses:
            self.ready.append(Ahead(h, parent, request.seen, request.at, share))

    # -- starting ---------------------------------------------------------------------------
    def _start(self) -> None:
        """As many ready hypotheses as there are free slots and budget, as trials, submitted."""
        ctl = self.ctl
        if not self.ready:
            return
        free = ctl.executor.capacity - ctl.executor.live()
        left = ctl.spec.budget.trials - ctl.ledger.hypotheses()
        n = min(free, left, len(self.ready))
        if n <= 0:
            if left <= 0:
                self.drop("the trial budget is spent")
            return
        # In SQL: parsing every trial for each start would cost O(trials) per trial.
        kinds = str(tuple(k.value for k in TrialKind if k.is_hypothesis()))
        decided = set(ctl.ledger.ids(f"decision IS NOT NULL AND kind IN {kinds}"))
        planned = int(ctl.ledger.scalar("SELECT COUNT(*) FROM trials WHERE kind = 'hypothesis'"))
        rounds = int(ctl.ledger.scalar("SELECT COALESCE(MAX(round), 0) FROM trials")) + 1
        specs = []
        for i in range(n):
            ahead = self.ready.popleft()
            trial, stale = self._trial(ahead, decided, planned + i, rounds)
            ctl.ledger.charge(trial.id, ahead.share.usd, ahead.share.tokens)
            spec = ctl.materialize(trial, fallback=stale)
            if spec is not None:
                specs.append(spec)
        if specs:
            ctl.submit(specs)
        ctl.check_budget()

    def _trial(self, ahead: Ahead, decided: set[str], index: int, rounds: int) -> tuple[Trial, Trial | None]:
        """The ledger row of a ready hypothesis, on the incumbent; and the incumbent it was planned
        on, when that is older (its edits are tried there if they no longer apply)."""
        ctl = self.ctl
        screen = ctl.spec.screening
        incumbent = self._parent()  # beside the baseline: the baseline, the incumbent-to-be
        assert incumbent.commit is not None
        h = ahead.hypothesis
        stale = ahead.parent if ahead.parent.commit != incumbent.commit else None
        without = sorted(decided - ahead.seen)
        if without or stale:
            # Planned ahead: say which results the planner had not seen when it proposed this.
            extra = {**h.extra, "planned_at": round(ahead.planned_at, 3), "planned_without": without}
            if stale:
                extra["planned_on"] = stale.id
            h = replace(h, extra=extra)
        refresh = getattr(ctl.planner, "refresh", None)
        if stale and refresh is not None:
            newer = refresh(h, self.incumbent_files())
            if newer is not None:  # a config change: its values set again on the incumbent's config
                h, stale = newer, None
        trial = ctl.ledger.add_trial(
            h,
            parent=incumbent.commit,
            parent_trial=incumbent.id,
            now=ctl.clock(),
            seed=ctl.spec.noise.seed,
            steps=ctl.spec.fidelity.screen_steps if screen else ctl.spec.full_steps,
            fidelity="screen" if screen else "full",
            # screened hypotheses are compared in rounds of round_size, whatever the slots
            round=index // ctl.spec.fidelity.round_size + 1 if screen else rounds,
        )
        return trial, stale

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

    def _parent(self) -> Trial:
        """What new hypotheses build on: the incumbent, or while it runs, the baseline."""
        parent = self.ctl.incumbent or self.ctl.ledger.trial("T0001")
        assert parent is not None and parent.commit is not None
        return parent

    def beside_baseline(self) -> None:
        """While the baseline runs: the first round is planned and (unless `wait_for_baseline`)
        started in the slots the baseline leaves free, to be judged once it is measured."""
        ctl = self.ctl
        if not ctl.may_plan() or ctl.ledger.trial("T0001") is None:
            return
        if not ctl.spec.run.wait_for_baseline:
            self.fill()  # the batch schedule starts nothing while a job runs
        elif self.depth:
            self._collect()
            self._ask()

    def incumbent_files(self) -> dict[str, str]:
        commit = self._parent().commit
        assert commit is not None
        if self.files is None or self.files[0] != commit:
            self.files = (commit, self.ctl.ws.surface_files(commit))
        return self.files[1]

    def context(self, trials: list[Trial], left: int) -> PlanContext:
        ctl = self.ctl
        parent = self._parent()
        files = self.incumbent_files()
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
            replace(parent, holdout=None),
            files,
            left,
            guidance,
            playbook=ctl.playbook.initial,
            budget_note=" ".join(notes),
            queued=tuple(a.hypothesis for a in self.ready),
        )
