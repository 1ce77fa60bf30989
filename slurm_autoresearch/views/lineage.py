"""The best branch's lineage: which kept trials its commit holds, from the ledger's parent links."""

from __future__ import annotations

from dataclasses import dataclass

from ..trial import Decision, Trial, TrialKind


@dataclass(frozen=True)
class Kept:
    """A kept trial as the reports list it: on the best branch or not, and what a combination merged."""

    trial: Trial
    on_best: bool
    merges: str = ""  # a combination: the trial whose change it merged in


def kept_changes(trials: list[Trial]) -> list[Kept]:
    """Every kept trial in the order of decisions, those on the best branch first.

    The best is the latest keep (what `ara/<run>/best` points at); walking its parent links (and a
    combination's other side) back to the baseline finds what the branch holds. A keep off that
    walk was superseded by a keep from an older parent and never merged: it is not on the branch.
    Kept combinations must carry their full hypothesis (`extra["combines"]`); light rows suffice
    for the rest."""
    kept = sorted(
        (t for t in trials if t.decision is Decision.KEEP), key=lambda t: (t.decided_at or 0, t.seq)
    )
    if not kept:
        return []
    by_id = {t.id: t for t in trials}
    on_best: set[str] = set()
    todo = [kept[-1].id]
    while todo:
        tid = todo.pop()
        t = by_id.get(tid)
        if t is None or tid in on_best:
            continue
        on_best.add(tid)
        todo += [p for p in (t.parent_trial, _other(t)) if p]
    ordered = [t for t in kept if t.id in on_best] + [t for t in kept if t.id not in on_best]
    return [Kept(t, t.id in on_best, _other(t) or "") for t in ordered]


def _other(t: Trial) -> str | None:
    """The trial a combination merged into its parent."""
    if t.kind is not TrialKind.COMBINE:
        return None
    combines = t.hypothesis.extra.get("combines") or []
    return str(combines[1]) if len(combines) > 1 else None
