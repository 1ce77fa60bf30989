"""The loop's model calls: which summarizer judges now, and every call's record in the ledger and log."""

from __future__ import annotations

from ..ledger import Ledger
from ..llm import LLM, Call
from .records import RunLog
from .state import RunState
from .summarizer import RuleSummarizer, Summarizer


class Models:
    """The summarizer (rules once an LLM budget is spent) and the bookkeeping of calls: the
    planner's, charged to the trials its answer became, and the summarizer's, to its trial."""

    def __init__(
        self,
        llm: LLM | None,
        summarizer: Summarizer,
        rules: RuleSummarizer,
        state: RunState,
        ledger: Ledger,
        log: RunLog,
    ) -> None:
        self.llm = llm
        self._summarizer = summarizer
        self.rules = rules
        self.state = state
        self.ledger = ledger
        self.log = log

    def summarizer(self) -> Summarizer:
        return self.rules if self.state.llm_spent else self._summarizer

    def take(self, role: str | None = None) -> list[Call]:
        return self.llm.take_calls(role) if self.llm else []

    def record(self, calls: list[Call], shares: list[str] | None = None) -> None:
        if calls:
            self.ledger.add_calls(calls, shares)
            self.log.calls(calls)

    def flush(self, role: str | None = None, shares: list[str] | None = None) -> None:
        """Calls since the last flush go to the ledger and the log, with their cost."""
        self.record(self.take(role), shares)
