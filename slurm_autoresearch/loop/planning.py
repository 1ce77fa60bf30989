"""Planning: a queue of ready hypotheses refilled in the background while jobs run, so a freed slot
starts a trial at once; what the planner sees; pausing while its API is down."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from typing import Protocol

from ..digest import Digest
from ..digest import read as read_digest
from ..hypothesis import Hypothesis
from ..ledger import Ledger
from ..planners import PlanContext, Planner
from ..planners.base import PlannerUnavailable, history
from ..planners.prompt import CURVE_TRIALS, RECENT_TRIALS
from ..playbook import Playbook
from ..rundir import RunDir
from ..task import Task
from ..trial import Trial, TrialKind
from ..trials import Trials
from ..workspace import Workspace
from .jobs import Starter
from .models import Models
from .state import RunState

FAILURES_TO_STOP = 5


class Slots(Protocol):
    """What planning needs of the executor: how many jobs may run at once, and how many do."""

    capacity: int

    def live(self) -> int: ...


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

    def __init__(
        self,
        task: Task,
        rundir: RunDir,
        ledger: Ledger,
        trials: Trials,
        state: RunState,
        planner: Planner,
        jobs: Starter,
        executor: Slots,
        workspace: Workspace,
        models: Models,
        playbook: Playbook,
        log: Callable[[str], None],
        clock: Callable[[], float],
    ) -> None:
        self.task = task
        self.spec = task.spec
        self.rundir = rundir
        self.ledger = ledger
        self.trials = trials
        self.state = state
        self.planner = planner
        self.jobs = jobs
        self.executor = executor
        self.ws = workspace
        self.models = models
        self.playbook = playbook
        self.log = log
        self.clock = clock
        run = self.spec.run
        self.batch = run.schedule == "batch"
        # How many hypotheses wait ready for a free slot (0: plan only when one is free).
        ahead = run.plan_ahead if run.plan_ahead is not None else executor.capacity
        self.depth = 0 if self.batch else ahead
        self.ready: deque[Ahead] = deque()
        self.request: _Request | None = None
        self.dry = False  # the planner said it has nothing left; what is ready still runs
        self.failures = 0
        self.paused_until = 0.0
        self.guidance_offset = 0
        self.files: tuple[str, dict[str, str]] | None = None  # the incumbent's editable files
        self._digests: dict[str, Digest] = {}  # decided trials' curve digests, read once
        self.cpu_s = 0.0  # the planner's own CPU time (its thread), for the overhead benchmark
        self.wake = threading.Event()  # set when an answer arrives: the loop need not sleep on
        self._pool: ThreadPoolExecutor | None = None

    def paused(self) -> bool:
        return self.clock() < self.paused_until

    def busy(self) -> bool:
        """A request is out (the loop waits on `wake` rather than sleeping a whole poll)."""
        return self.request is not None

    # -- the loop's one call ----------------------------------------------------------------
    def fill(self) -> None:
        """Start ready hypotheses in free slots, collect the planner's answer, ask for more."""
        if not self.state.may_plan():
            self.drop("no more hypotheses are planned")
            return
        self._collect()
        self._start()
        if self.dry and not self.ready and self.request is None and not self.state.exhausted:
            self.state.exhaust("planner has nothing left to propose")
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
            self.log(f"{len(self.ready)} hypotheses planned ahead are not run: {why}")
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
        self.models.flush(role="planner")

    # -- asking -----------------------------------------------------------------------------
    def _wanted(self, left: int) -> int:
        free = self.executor.capacity - self.executor.live()
        if self.batch:
            # The synchronous loop: a new round only when every job of the last one has ended.
            return min(left, self.executor.capacity) if self.executor.live() == 0 else 0
        want = free + self.depth - len(self.ready)
        # Refill in batches: ask when the queue is at most half full, so each call carries several.
        if self.ready and len(self.ready) > self.depth // 2 and free <= len(self.ready):
            return 0
        return max(0, min(want, left))

    def _ask(self) -> None:
        if self.request is not None or self.dry or self.paused():
            return
        # Counted in SQL: asked every poll, while trials are parsed only when planning.
        left = self.spec.budget.trials - self.ledger.hypotheses() - len(self.ready)
        n = self._wanted(left)
        if n <= 0:
            return
        trials = self.ledger.trials()
        ctx = self.context(trials, left)
        seen = frozenset(t.id for t in ctx.trials if t.decision is not None)
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ara-planner")
        self.wake.clear()
        future = self._pool.submit(self._propose, ctx, n)
        future.add_done_callback(lambda _f: self.wake.set())
        self.request = _Request(future, ctx, n, seen, self.clock())

    def _propose(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        start = time.thread_time()
        try:
            return self.planner.propose(ctx, n)[:n]
        finally:
            self.cpu_s += time.thread_time() - start

    def _collect(self) -> None:
        """The planner's answer, once it has come: into the ready queue, or a pause."""
        request = self.request
        if request is None or not request.future.done():
            return
        self.request = None
        try:
            hypotheses = request.future.result()
        except PlannerUnavailable as exc:
            self.models.flush(role="planner")
            self.pause(str(exc))
            return
        self.failures = 0
        degraded = getattr(self.planner, "degraded", "")
        if degraded:
            self.log(f"planner API failed ({degraded}); this round comes from the offline planner")
        if request.ctx.guidance and self.planner.name != "offline":
            self.ledger.set_meta(guidance_offset=self.guidance_offset)
            self.ledger.event(self.clock(), "guidance-read", request.ctx.guidance.strip()[:2000])
        if not hypotheses:
            self.models.flush(role="planner")
            self.dry = True
            return
        parent = request.ctx.incumbent
        assert parent is not None
        # The calls reach the ledger now (budgets see them at once); each trial made from this
        # answer is charged its share when it is made.
        calls = self.models.take("planner")
        self.models.record(calls)
        share = _Share(
            sum(c.cost_usd for c in calls) / len(hypotheses), sum(c.tokens for c in calls) // len(hypotheses)
        )
        for h in hypotheses:
            self.ready.append(Ahead(h, parent, request.seen, request.at, share))

    # -- starting ---------------------------------------------------------------------------
    def _start(self) -> None:
        """As many ready hypotheses as there are free slots and budget, as trials, submitted."""
        if not self.ready:
            return
        free = self.executor.capacity - self.executor.live()
        left = self.spec.budget.trials - self.ledger.hypotheses()
        n = min(free, left, len(self.ready))
        if n <= 0:
            if left <= 0:
                self.drop("the trial budget is spent")
            return
        # In SQL: parsing every trial for each start would cost O(trials) per trial.
        decided = self.ledger.decided_ideas()
        planned = self.ledger.count_kind(TrialKind.HYPOTHESIS)
        rounds = self.ledger.last_round() + 1
        rows, fallbacks = [], {}
        for i in range(n):
            ahead = self.ready.popleft()
            trial, stale = self._trial(ahead, decided, planned + i, rounds)
            self.ledger.charge(trial.id, ahead.share.usd, ahead.share.tokens)
            rows.append(trial)
            if stale is not None:
                fallbacks[trial.id] = stale
        self.jobs.start(rows, fallbacks=fallbacks)
        self.state.check_budget()

    def _trial(self, ahead: Ahead, decided: set[str], index: int, rounds: int) -> tuple[Trial, Trial | None]:
        """The ledger row of a ready hypothesis, on the incumbent; and the incumbent it was planned
        on, when that is older (its edits are tried there if they no longer apply)."""
        plan = self.state.fidelity  # None: `auto` has not measured yet, so the full budget
        screen = plan if plan is not None and plan.screen else None
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
        refresh = getattr(self.planner, "refresh", None)
        if stale and refresh is not None:
            newer = refresh(h, self.incumbent_files())
            if newer is not None:  # a config change: its values set again on the incumbent's config
                h, stale = newer, None
        trial = self.trials.planned(
            h,
            parent=incumbent.commit,
            parent_trial=incumbent.id,
            seed=self.spec.noise.seed,
            steps=screen.screen_steps if screen else self.spec.full_steps,
            fidelity="screen" if screen else "full",
            # screened hypotheses are compared in rounds of round_size, whatever the slots; those
            # planned before `auto` decided ran at the full budget and are not counted
            round=(index - screen.offset) // self.spec.fidelity.round_size + 1 if screen else rounds,
        )
        return trial, stale

    def pause(self, reason: str) -> None:
        self.failures += 1
        wait = min(30.0 * 2 ** (self.failures - 1), 600.0)
        self.paused_until = self.clock() + wait
        self.ledger.event(self.clock(), "planner-unavailable", reason)
        self.log(f"planner unavailable ({reason}); pausing planning for {wait:.0f} s")
        if self.failures >= FAILURES_TO_STOP:
            self.state.stop(f"stopped: the planner failed {self.failures} rounds in a row ({reason})", "")

    def _parent(self) -> Trial:
        """What new hypotheses build on: the incumbent, or while it runs, the baseline."""
        parent = self.state.incumbent or self.ledger.trial("T0001")
        assert parent is not None and parent.commit is not None
        return parent

    def beside_baseline(self) -> None:
        """While the baseline runs: the first round is planned and (unless `wait_for_baseline`)
        started in the slots the baseline leaves free, to be judged once it is measured."""
        if not self.state.may_plan() or self.ledger.trial("T0001") is None:
            return
        if not self.spec.run.wait_for_baseline:
            self.fill()  # the batch schedule starts nothing while a job runs
        elif self.depth:
            self._collect()
            self._ask()

    def incumbent_files(self) -> dict[str, str]:
        commit = self._parent().commit
        assert commit is not None
        if self.files is None or self.files[0] != commit:
            self.files = (commit, self.ws.surface_files(commit))
        return self.files[1]

    def context(self, trials: list[Trial], left: int) -> PlanContext:
        parent = self._parent()
        files = self.incumbent_files()
        offset = int(self.ledger.meta().get("guidance_offset", 0))
        guidance, self.guidance_offset = self.rundir.guidance_from(offset)
        limit = self.spec.budget
        notes = []
        if limit.gpu_hours:
            used = sum(t.gpu_seconds or 0 for t in trials) / 3600
            notes.append(f"GPU-hours {limit.gpu_hours - used:.2f} of {limit.gpu_hours:g} left.")
        if limit.llm_usd:
            notes.append(f"LLM dollars {limit.llm_usd - self.ledger.llm_totals()[0]:.2f} left.")
        rows = history(trials)
        return PlanContext(
            self.task,
            rows,
            replace(parent, holdout=None),
            files,
            left,
            guidance,
            playbook=self.playbook.initial,
            budget_note=" ".join(notes),
            queued=tuple(a.hypothesis for a in self.ready),
            digests=self.digests(rows),
        )

    def digests(self, rows: list[Trial]) -> dict[str, Digest]:
        """The curve digests of the latest rows the prompt shows that have one: at most
        RECENT_TRIALS small files read per call, fewer once decided trials' digests are cached."""
        found: dict[str, Digest] = {}
        for t in reversed(rows[-RECENT_TRIALS:]):
            d = self._digests.get(t.id)
            if d is None:
                d = read_digest(self.rundir.trial_dir(t.id))
                if d is not None and t.decision is not None:
                    self._digests[t.id] = d  # a decided trial's digest no longer changes
            if d is not None:
                found[t.id] = d
                if len(found) == CURVE_TRIALS:
                    break
        return found
