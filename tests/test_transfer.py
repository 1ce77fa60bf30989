"""`[validate]`: the best keeps and the baseline again at a longer budget, and whether their ranking held."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurm_autoresearch.errors import TaskError
from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.transfer import SOURCE, chosen, verdict
from slurm_autoresearch.trial import Decision, Trial, TrialKind, TrialState
from slurm_autoresearch.views.status import status_document

from .conftest import write_task


def _row(seq: int, commit: str, metric: float | None, steps: int = 100, **kw: object) -> Trial:
    fields: dict[str, object] = {"state": TrialState.DONE, "decision": Decision.KEEP, "steps": steps}
    fields.update(kw)
    return Trial(
        f"T{seq:04d}", seq, f"idea {seq}", str(fields.pop("source", "idea")), Hypothesis(f"idea {seq}"),
        commit=commit, metric=metric, **fields,  # type: ignore[arg-type]
    )  # fmt: skip


def _check(seq: int, of: Trial, metric: float | None) -> Trial:
    decided = Decision.REPEAT if metric is not None else Decision.CRASH
    return _row(
        seq, of.commit or "", metric, 400, kind=TrialKind.RERUN, of=of.id, source=SOURCE, decision=decided
    )


def test_chosen_takes_the_best_keeps_then_the_baseline() -> None:
    base = _row(1, "a", 0.5, kind=TrialKind.BASELINE)
    rows = [
        base,
        _row(2, "b", 0.7),
        _row(3, "c", 0.6),
        _row(4, "d", 0.9, decision=Decision.DISCARD),
        _row(5, "e", 0.8),
    ]
    assert [t.id for t in chosen(rows, 2, "max", 100)] == ["T0005", "T0002", "T0001"]
    assert [t.id for t in chosen(rows, 2, "min", 100)] == ["T0003", "T0002", "T0001"]


def test_verdict_says_whether_the_ranking_held() -> None:
    base, fast, slow = _row(1, "a", 0.5, kind=TrialKind.BASELINE), _row(2, "b", 0.8), _row(3, "c", 0.7)
    search = [fast, slow, base]
    held = verdict([*search, _check(4, fast, 0.9), _check(5, slow, 0.85), _check(6, base, 0.6)], "max", 100)
    assert held is not None and held.held and held.steps == 400 and held.search_steps == 100
    assert held.line().startswith("transfer check at 400 steps: the ranking held. At 100: T0002 0.8 > T0003")

    # A fast starter: best at 100 steps, overtaken at 400.
    changed = verdict(
        [*search, _check(4, fast, 0.82), _check(5, slow, 0.88), _check(6, base, 0.6)], "max", 100
    )
    assert changed is not None and not changed.held and not changed.best_held
    assert "the ranking changed: T0003 is best at 400 steps" in changed.line()
    assert changed.to_dict()["entries"][0] == {"trial": "T0002", "search": 0.8, "longer": 0.82, "runs": 1}
    assert "whether beyond noise is unmeasured (one run each" in changed.line()
    untested = {"above": "T0002", "below": "T0003", "t": None, "beyond_noise": None}
    assert changed.to_dict()["swaps"] == [untested]

    failed = verdict(
        [*search, _check(4, fast, None), _check(5, slow, 0.88), _check(6, base, 0.6)], "max", 100
    )
    assert failed is not None and failed.line().endswith("no result: T0002")
    still = _row(5, "c", None, 400, kind=TrialKind.RERUN, of="T0003", source=SOURCE, decision=None)
    running = [*search, _check(4, fast, 0.9), still]
    assert verdict(running, "max", 100) is None  # its runs still run
    assert verdict(search, "max", 100) is None  # no check asked for


def test_a_swap_is_judged_against_the_seeds_spread_at_the_longer_budget() -> None:
    base, fast, slow = _row(1, "a", 0.5, kind=TrialKind.BASELINE), _row(2, "b", 0.8), _row(3, "c", 0.7)
    search = [fast, slow, base]

    def checked(fast_runs: list[float], slow_runs: list[float]) -> list[Trial]:
        runs = [(fast, m) for m in fast_runs] + [(slow, m) for m in slow_runs] + [(base, 0.6), (base, 0.62)]
        return [*search, *(_check(10 + i, of, m) for i, (of, m) in enumerate(runs))]

    # T0003 ahead by 0.01 where seeds differ by 0.04: inside the spread (sd 0.024, 3 dof)
    close = verdict(checked([0.80, 0.84], [0.81, 0.85]), "max", 100)
    assert close is not None and not close.held and close.held_within_noise
    assert close.sigma == pytest.approx(0.0245, abs=1e-4) and close.dof == 3
    assert (
        "the ranking held within noise: T0003 over T0002 (t 0.41) is inside the seeds' spread "
        "(sd 0.0245, 3 dof, two-sided 5%)" in close.line()
    )
    (swap,) = close.to_dict()["swaps"]  # type: ignore[misc]
    assert swap["above"] == "T0002" and swap["below"] == "T0003" and swap["beyond_noise"] is False

    # T0003 ahead by 0.10 where seeds differ by 0.002: beyond noise
    clear = verdict(checked([0.800, 0.802], [0.900, 0.902]), "max", 100)
    assert clear is not None and not clear.held_within_noise and not clear.best_held
    line = clear.line()
    assert "the ranking changed: T0003 is best at 400 steps; beyond the seeds' spread (sd " in line
    assert "T0003 over T0002 (t " in line


def test_validate_steps_must_be_longer_than_the_search(toy_repo: Path) -> None:
    path = write_task(toy_repo, "\n[validate]\ntop = 2\nsteps = 5\n")
    with pytest.raises(
        TaskError, match=r"\[validate\] steps \(5\) must be set above the search's full steps \(5\)"
    ):
        load_task(path)


def test_a_run_ends_with_its_transfer_check(toy_repo: Path) -> None:
    ideas = "".join(f'[[ideas]]\ntitle = "x to {x}"\nconfig = {{ x = {x} }}\n' for x in (1.0, 2.0, 2.5))
    path = write_task(toy_repo, ideas + "\n[validate]\ntop = 2\nsteps = 20\n", trials=4)
    lines: list[str] = []
    controller = launch(load_task(path), echo=lines.append)
    rundir = controller.rundir
    controller.run()
    ledger = Ledger.open(rundir.ledger, readonly=True)
    checks = [t for t in ledger.trials() if t.source == SOURCE]
    # The two best keeps (x = 2.5, then 2.0) and the baseline, each again at 20 steps.
    assert [(t.of, t.steps, t.kind, t.decision) for t in checks] == [
        ("T0004", 20, TrialKind.RERUN, Decision.REPEAT),
        ("T0003", 20, TrialKind.RERUN, Decision.REPEAT),
        ("T0001", 20, TrialKind.RERUN, Decision.REPEAT),
    ]
    said = [line for line in lines if line.startswith("transfer check at 20 steps: the ranking held")]
    assert said and "At 5: T0004 -9.25 > T0003 -10 > T0001 -15.25" in said[0]
    assert said[0] in rundir.report.read_text()
    assert "transfer check" in (rundir.path / "report.html").read_text()
    doc = status_document(rundir, ledger)
    assert doc["transfer"]["held"] is True and doc["transfer"]["steps"] == 20
    assert [e["trial"] for e in doc["transfer"]["entries"]] == ["T0004", "T0003", "T0001"]
    assert doc["transfer"]["swaps"] == [] and doc["transfer"]["held_within_noise"] is True
    assert doc["transfer"]["sigma"] is None and doc["transfer"]["entries"][0]["runs"] == 1  # one seed each
    ledger.close()
