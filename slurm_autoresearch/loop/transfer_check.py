"""Starting the transfer check (`[validate]`) when the search is over; transfer.py reads its verdict."""

from __future__ import annotations

from collections.abc import Callable

from .. import transfer
from ..ledger import Ledger
from ..spec import TaskSpec
from ..trial import TrialKind
from .referee import Referee
from .state import RunState


def start_transfer_check(
    spec: TaskSpec, ledger: Ledger, state: RunState, referee: Referee, log: Callable[[str], None]
) -> bool:
    """Once per run: its best keeps and the baseline again at the longer budget. True when it
    started runs (the loop then waits for them); a stopping run says why it did not."""
    check = spec.transfer
    if not check.top or check.steps is None:
        return False  # before reading the ledger: every run without [validate] ends through here
    trials = ledger.trials()
    if any(t.source == transfer.SOURCE for t in trials):
        return False
    if not state.may_run_more():
        ledger.set_meta(transfer_skipped=state.stopping)
        log(f"transfer check not run: {state.stopping}")
        return False
    picked = transfer.chosen(trials, check.top, spec.metric.goal, spec.budget.steps)
    if len(picked) < 2:
        ledger.set_meta(transfer_skipped="no keep beyond the baseline")
        log("transfer check not run: no keep beyond the baseline")
        return False
    why = f"transfer check at {check.steps} steps"
    for trial in picked:
        referee.runs(trial, check.seeds, check.steps, TrialKind.RERUN, why, source=transfer.SOURCE)
    log(f"{why}: {', '.join(t.id for t in picked)} again, {check.seeds} seed(s) each")
    return True
