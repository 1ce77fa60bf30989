"""report.md and progress.png of a run: trial counts, the run's own wall time, the best lineage, labels."""

from __future__ import annotations

import re
from itertools import combinations
from pathlib import Path

from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.task import read_spec
from slurm_autoresearch.trial import Decision, Trial, TrialState
from slurm_autoresearch.views.lineage import kept_changes
from slurm_autoresearch.views.plot import TITLE_CHARS, progress_figure
from slurm_autoresearch.views.report import write_run_report

from .ledgers import ROWS, synthetic_run


def _trials(rundir: Path) -> list[Trial]:
    ledger = Ledger.open(rundir / "ledger.sqlite", readonly=True)
    try:
        return ledger.trials()
    finally:
        ledger.close()


def test_report_counts_budgeted_trials_apart_and_follows_the_best_lineage(tmp_path: Path) -> None:
    rundir = synthetic_run(tmp_path)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        text = write_run_report(rundir, read_spec(rundir.task_copy), ledger, plot=False).read_text()
    finally:
        ledger.close()
    # 8 rows, of which the baseline and 4 hypotheses count toward budget.trials = 5: not "8 of 5".
    assert "- trials: 5 of 5 budgeted, + 1 repeat, 1 rerun, 1 combination (3 keep," in text
    assert "wall time 10.0 min (+ 2.0 min of `ara rerun` after it ended)" in text
    kept = text.split("## Kept changes, in order", 1)[1]
    on_branch, off_branch = kept.split("Kept when decided, then superseded and never merged:")
    # T0003 and T0004 were both kept from the baseline; T0004 is the best, their merge lost.
    assert re.findall(r"^1\. (T\d{4})", on_branch, re.M) == ["T0001", "T0004"]
    assert re.findall(r"^- (T\d{4}) .*, not on the best branch$", off_branch, re.M) == ["T0003"]


def test_a_kept_combination_puts_both_sides_on_the_best_branch(tmp_path: Path) -> None:
    rows = [list(r) for r in ROWS]
    rows[4][5] = Decision.KEEP  # the merge of T0004 and T0003 earned its keep: it is the best
    rows[4][6] = -6.0
    rows[5][2] = rows[6][2] = "T0005"
    kept = kept_changes(_trials(synthetic_run(tmp_path, rows=[tuple(r) for r in rows]).path))
    assert [(k.trial.id, k.on_best, k.merges) for k in kept] == [
        ("T0001", True, ""),
        ("T0003", True, ""),
        ("T0004", True, ""),
        ("T0005", True, "T0003"),
    ]


def _dense(n: int) -> list[Trial]:
    """n trials, every third kept and a little better, all with the same long title."""
    out = []
    for i in range(1, n + 1):
        keep = i % 3 == 1
        out.append(
            Trial(
                id=f"T{i:04d}",
                seq=i,
                title="Increase the learning rate warmup and decay it on a cosine schedule",
                source="search",
                hypothesis=Hypothesis("x"),
                state=TrialState.DONE,
                metric=0.5 + i * 0.001 if keep else 0.45 + (i % 7) * 0.005,
                decision=Decision.KEEP if keep else Decision.DISCARD,
                decided_at=float(i),
            )
        )
    return out


def test_progress_labels_are_short_and_never_overlap() -> None:
    for n in (12, 40):
        fig = progress_figure(_dense(n), "acc", "max")
        ax = fig.axes[0]
        renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
        labels = list(ax.texts)
        assert labels, "kept trials are labelled"
        for label in labels:
            text = label.get_text()
            assert re.match(r"T\d{4}( |$)", text) and len(text) <= 6 + TITLE_CHARS, text
        boxes = [label.get_window_extent(renderer) for label in labels]
        assert not any(a.overlaps(b) for a, b in combinations(boxes, 2)), n
        legend = ax.get_legend().get_window_extent(renderer)
        assert not any(box.overlaps(legend) for box in boxes)
        if n == 12:  # room for all four, titled
            assert [t.get_text()[:5] for t in labels] == ["T0001", "T0004", "T0007", "T0010"]
            assert all(t.get_text().endswith("…") for t in labels)


def test_reruns_and_combinations_have_their_own_markers(tmp_path: Path) -> None:
    trials = _trials(synthetic_run(tmp_path).path)
    ax = progress_figure(trials, "score", "max").axes[0]
    drawn = {c.get_label(): sorted(int(x) for x, _ in c.get_offsets()) for c in ax.collections}
    assert drawn["kept"] == [1, 3, 4]
    assert drawn["repeat / re-run"] == [2, 8]  # the noise repeat and the `ara rerun`
    assert drawn["combination (discarded)"] == [5]
    assert drawn["discarded"] == [6]  # not the re-runs, not the combination
    assert "crash" in drawn
    assert ax.get_title() == "8 trials (5 budgeted), 3 kept"
