"""The run's own state: its incumbent, why no more jobs start or no more ideas are planned, budgets."""

from __future__ import annotations

from collections.abc import Callable

from .. import budget, fidelity
from ..ledger import Ledger
from ..spec import TaskSpec
from ..trial import Trial


class RunState:
    """What every collaborator of the loop asks before acting, with its one writer per field:
    the referee sets the incumbent, `stop` and `exhaust` say why the run winds down."""

    def __init__(
        self,
        spec: TaskSpec,
        ledger: Ledger,
        *,
        started: float,
        clock: Callable[[], float],
        live: Callable[[], int],
        log: Callable[[str], None],
    ) -> None:
        self.spec = spec
        self.ledger = ledger
        self.started = started  # budgets span resumes: the run's creation, not this process's
        self.clock = clock
        self.live = live  # jobs still running, for the log's wording
        self.log = log
        self.incumbent: Trial | None = None
        self.stopping = ""  # why no more jobs start (stop request, a spent budget, crashes)
        self.exhausted = ""  # why no more hypotheses are planned (their pending re-runs still run)
        self.llm_spent = False  # an LLM budget ran out: rules only from here on
        # How hypotheses are screened; None while `auto` waits for the baseline's first array
        # (the referee decides it then, and is its one writer)
        self.fidelity: fidelity.Plan | None = fidelity.plan_in_force(spec, ledger.meta())

    def may_plan(self) -> bool:
        """Whether new hypotheses may still be planned."""
        return not self.stopping and not self.exhausted

    def may_run_more(self) -> bool:
        """Whether new jobs may still start (confirmations, promotions, combinations)."""
        return not self.stopping

    def stop(self, why: str, waiting: str = "; waiting for running trials") -> None:
        """No more jobs start; `waiting` is said when some still run."""
        self.stopping = why
        self.log(why + (waiting if self.live() else ""))

    def exhaust(self, why: str, waiting: str = "; waiting for running trials") -> None:
        """No more hypotheses are planned; what runs and what it asks for still go on."""
        self.exhausted = why
        self.log(why + (waiting if self.live() else ""))

    def check_budget(self) -> None:
        """Every budget against the ledger's spending: GPU-hours, wall time, LLM dollars and tokens,
        the crash streak, and the number of trials."""
        spending = self.ledger.spending(self.spec.budget.crash_limit)
        self.llm_spent = bool(budget.llm_spent(self.spec.budget, spending.llm_usd, spending.llm_tokens))
        spent = budget.spent(self.spec.budget, spending, elapsed_s=self.clock() - self.started)
        if spent:
            self.stop(spent)
            return
        if not self.exhausted:
            trials = budget.trials_spent(self.spec.budget, spending.hypotheses)
            if trials:
                self.exhaust(trials, "; finishing what runs")
