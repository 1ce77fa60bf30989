"""The transfer check: whether the best keeps still rank the same when they train for longer.

A fixed short budget favours fast starters. With `[validate] top = K, steps = N`, the run's end
re-runs its K best keeps and the baseline at N steps (rows of kind rerun, source "validate"), and
this module reads the verdict from those rows: the order at the search's budget against the order
at N steps, and for each pair that swapped, whether the swap is beyond the noise of the seeds at
N steps (a two-sided t test at 5%, on the spread pooled over the check's own runs).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .evidence import improvement, noise, steps_of, t_quantile, values
from .trial import Decision, Trial, TrialKind

if TYPE_CHECKING:
    from .spec import TaskSpec

SOURCE = "validate"  # the source of the check's rows (a column light reads keep)
SWAP_LEVEL = 0.05  # two-sided: a swap is beyond noise where |t| passes t(1 - SWAP_LEVEL/2, dof)
_IDEAS = (TrialKind.BASELINE, TrialKind.HYPOTHESIS, TrialKind.COMBINE, TrialKind.PROMOTE)


def chosen(trials: list[Trial], top: int, goal: str, default_steps: int) -> list[Trial]:
    """The `top` best keeps by their mean at their own budget (one per commit), then the baseline."""
    kept = [t for t in trials if t.decision is Decision.KEEP and t.kind in _IDEAS and t.commit]
    baseline = next((t for t in kept if t.kind is TrialKind.BASELINE), None)
    best: dict[str, tuple[float, Trial]] = {}
    for t in kept:
        if t is baseline:
            continue
        runs = values(trials, t.commit, steps_of(t, default_steps), default_steps)
        if runs and t.commit not in best:
            best[t.commit or ""] = (statistics.fmean(runs), t)
    ranked = sorted(best.values(), key=lambda pair: -pair[0] if goal == "max" else pair[0])
    picked = [t for _, t in ranked[:top]]
    return picked + ([baseline] if baseline is not None and baseline.commit not in best else [])


@dataclass(frozen=True)
class Entry:
    trial: str
    title: str
    search: float  # mean at the search's budget
    longer: float | None  # mean at the check's steps; None: its runs failed
    runs: int  # measured runs at the check's steps


@dataclass(frozen=True)
class Swap:
    """Two entries whose order at the check's steps is the reverse of the search's."""

    above: str  # ranked above at the search's budget, below at the check's
    below: str
    t: float | None  # the later lead over its standard error; None: the noise is unmeasured
    beyond_noise: bool | None  # None where it could not be tested


@dataclass(frozen=True)
class Transfer:
    search_steps: int
    steps: int
    entries: list[Entry]  # in the search's order, best first
    goal: str
    sigma: float | None = None  # the spread between seeds at the check's steps (None: one run each)
    dof: int = 0

    def longer_order(self) -> list[Entry]:
        measured = [e for e in self.entries if e.longer is not None]
        return sorted(measured, key=lambda e: -(e.longer or 0.0) if self.goal == "max" else e.longer or 0.0)

    @property
    def held(self) -> bool:
        """The same order at both budgets, among the entries measured at both."""
        measured = [e for e in self.entries if e.longer is not None]
        return len(measured) >= 2 and measured == self.longer_order()

    @property
    def best_held(self) -> bool:
        order = self.longer_order()
        return bool(order) and order[0] == self.entries[0]

    def swaps(self) -> list[Swap]:
        """Every pair measured at both budgets whose order reversed, with its t against noise."""
        measured = [e for e in self.entries if e.longer is not None]
        critical = t_quantile(1 - SWAP_LEVEL / 2, self.dof) if self.sigma else None
        found = []
        for i, above in enumerate(measured):
            for below in measured[i + 1 :]:
                lead = improvement(below.longer or 0.0, above.longer or 0.0, self.goal)
                if lead <= 0:
                    continue
                if critical is None:  # one run each, or every seed gave the same metric
                    found.append(Swap(above.trial, below.trial, None, None))
                    continue
                t = lead / (self.sigma * (1 / above.runs + 1 / below.runs) ** 0.5)
                found.append(Swap(above.trial, below.trial, t, t > critical))
        return found

    @property
    def held_within_noise(self) -> bool:
        """The order held, or every swap lies inside the seeds' spread (and was tested)."""
        swaps = self.swaps()
        return self.held or (bool(swaps) and all(s.beyond_noise is False for s in swaps))

    def _noise_words(self, swaps: list[Swap]) -> str:
        if self.sigma is None:
            return (
                "whether beyond noise is unmeasured (one run each at the longer budget: "
                "[validate] seeds = 2 or more measures it)"
            )
        if self.sigma == 0:
            return "every seed gave the same metric, so the noise is unmeasurable"
        beyond = [s for s in swaps if s.beyond_noise]
        spread = f"the seeds' spread (sd {self.sigma:.3g}, {self.dof} dof, two-sided {SWAP_LEVEL:.0%})"
        if not beyond:
            pairs = ", ".join(f"{s.below} over {s.above} (t {s.t:.2g})" for s in swaps)
            return f"{pairs} {'is' if len(swaps) == 1 else 'are'} inside {spread}"
        pairs = ", ".join(f"{s.below} over {s.above} (t {s.t:.2g})" for s in beyond)
        return f"beyond {spread}: {pairs}"

    def line(self) -> str:
        """One line for logs and reports: the verdict, then both orders."""
        search = " > ".join(f"{e.trial} {e.search:.4g}" for e in self.entries)
        longer = " > ".join(f"{e.trial} {e.longer:.4g}" for e in self.longer_order())
        failed = [e.trial for e in self.entries if e.longer is None]
        swaps = self.swaps()
        if len(self.entries) - len(failed) < 2:
            verdict = "could not be judged (fewer than two measured at the longer budget)"
        elif self.held:
            verdict = "the ranking held"
        elif self.held_within_noise:
            verdict = f"the ranking held within noise: {self._noise_words(swaps)}"
        elif self.best_held:
            verdict = f"the best stayed best, the rest of the ranking changed; {self._noise_words(swaps)}"
        else:
            best = self.longer_order()[0].trial
            verdict = f"the ranking changed: {best} is best at {self.steps} steps; {self._noise_words(swaps)}"
        tail = f"; no result: {', '.join(failed)}" if failed else ""
        return (
            f"transfer check at {self.steps} steps: {verdict}. At {self.search_steps}: {search}; "
            f"at {self.steps}: {longer or 'none'}{tail}"
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "steps": self.steps,
            "search_steps": self.search_steps,
            "held": self.held,
            "best_held": self.best_held,
            "held_within_noise": self.held_within_noise,
            "sigma": self.sigma,
            "dof": self.dof,
            "swaps": [
                {"above": s.above, "below": s.below, "t": s.t, "beyond_noise": s.beyond_noise}
                for s in self.swaps()
            ],
            "entries": [
                {"trial": e.trial, "search": e.search, "longer": e.longer, "runs": e.runs}
                for e in self.entries
            ],
            "line": self.line(),
        }


def verdict(trials: Iterable[Trial], goal: str, default_steps: int) -> Transfer | None:
    """The check's verdict from the ledger's rows (light ones do); None when it has not run, or its
    runs still run. Needs no task spec: the read side, which never loads pydantic, shows it too."""
    rows = list(trials)
    checks = [t for t in rows if t.kind is TrialKind.RERUN and t.source == SOURCE]
    if not checks or any(t.decision is None for t in checks):
        return None
    steps = steps_of(checks[0], default_steps)
    by_id = {t.id: t for t in rows}
    entries = []
    for of in dict.fromkeys(t.of for t in checks if t.of):
        source = by_id.get(of)
        if source is None:
            continue
        own = values(rows, source.commit, steps_of(source, default_steps), default_steps)
        longer = values(rows, source.commit, steps, default_steps)
        if own:
            mean = statistics.fmean(longer) if longer else None
            entries.append(Entry(of, source.title, statistics.fmean(own), mean, len(longer)))
    if not entries:
        return None
    search_steps = steps_of(by_id[entries[0].trial], default_steps)
    spread = noise(rows, steps, default_steps)
    return Transfer(search_steps, steps, entries, goal, spread.sigma, spread.dof)


def of_run(trials: Iterable[Trial], spec: TaskSpec) -> Transfer | None:
    """The verdict of a run's `[validate]` check, when it has one."""
    return verdict(trials, spec.metric.goal, spec.budget.steps)
