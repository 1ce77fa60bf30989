"""Offline planner: the idea backlog first, then TPE over the config file, every proposal an edit."""

from __future__ import annotations

import tomllib
from pathlib import Path

from slurm_autoresearch.config_file import set_value
from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.planners import OfflinePlanner, PlanContext
from slurm_autoresearch.trial import Decision, Trial, TrialState

from .conftest import write_task

IDEAS = """
[[ideas]]
title = "x to 2"
rationale = "closer to the optimum"
config = { x = 2.0 }

[[ideas]]
title = "edit code"
[[ideas.edits]]
path = "train.py"
search = 'print(f"step 0/{steps} loss 1.0", flush=True)'
replace = 'print(f"step 0 of {steps} loss 1.0", flush=True)'
"""

FILES = {"config.toml": "x = 0.5  # the x knob\ny = 2.0\n", "train.py": "steps = 3\n"}


def _ctx(repo: Path, trials: list[Trial], extra: str = IDEAS) -> tuple[OfflinePlanner, PlanContext]:
    task = load_task(write_task(repo, extra))
    return OfflinePlanner(task.spec), PlanContext(task, trials, None, FILES, 10)


def _done(seq: int, h: Hypothesis, metric: float | None, decision: Decision) -> Trial:
    return Trial(
        id=f"T{seq:04d}",
        seq=seq,
        title=h.title,
        source=h.source,
        hypothesis=h,
        state=TrialState.DONE,
        decision=decision,
        metric=metric,
    )


def test_backlog_comes_first_in_order_then_search(toy_repo: Path) -> None:
    planner, ctx = _ctx(toy_repo, [])
    out = planner.propose(ctx, 4)
    assert [h.title for h in out[:2]] == ["x to 2", "edit code"]
    assert [h.source for h in out] == ["idea", "idea", "search", "search"]
    first = out[0]
    assert first.edits[0].path == "config.toml"
    assert first.edits[0].replace == "x = 2.0  # the x knob\n"
    assert first.params == {"x": 2.0, "y": 2.0}
    assert out[1].params is None  # a code edit is not a point of the search space


def test_tried_ideas_are_not_proposed_again(toy_repo: Path) -> None:
    planner, ctx = _ctx(toy_repo, [])
    first = planner.propose(ctx, 1)[0]
    planner, ctx = _ctx(toy_repo, [_done(1, first, 1.0, Decision.KEEP)])
    assert planner.propose(ctx, 1)[0].title == "edit code"


def test_samples_are_edits_inside_the_space_without_duplicates(toy_repo: Path) -> None:
    planner, ctx = _ctx(toy_repo, [], extra="")
    out = planner.propose(ctx, 12)
    assert len(out) == 12
    params = [h.params for h in out]
    assert all(p is not None and -5 <= p["x"] <= 5 and -5 <= p["y"] <= 5 for p in params)
    assert len({tuple(sorted(p.items())) for p in params if p}) == 12
    for h in out:
        text = FILES["config.toml"]
        for e in h.edits:
            assert text.count(e.search) == 1
            text = text.replace(e.search, e.replace)
        assert tomllib.loads(text) == {"x": h.params["x"], "y": h.params["y"]}  # type: ignore[index]


def test_history_steers_the_sampler(toy_repo: Path) -> None:
    planner, ctx = _ctx(toy_repo, [], extra="")
    history = [_done(i + 1, h, -float(i), Decision.DISCARD) for i, h in enumerate(planner.propose(ctx, 6))]
    planner, with_history = _ctx(toy_repo, history, extra="")
    again = planner.propose(with_history, 3)
    same = planner.propose(with_history, 3)
    assert [h.params for h in again] == [h.params for h in same]  # deterministic for a given ledger
    assert not {tuple(sorted(h.params.items())) for h in again} & {  # type: ignore[union-attr]
        tuple(sorted(t.hypothesis.params.items())) for t in history
    }  # type: ignore[union-attr]


def test_integer_and_categorical_spaces(toy_repo: Path) -> None:
    base = (
        (toy_repo / "task.toml")
        .read_text()
        .replace("y = { low = -5.0, high = 5.0 }", "y = { choices = [1, 2, 4] }")
        .replace("x = { low = -5.0, high = 5.0 }", "x = { low = 1, high = 9, step = 2 }")
    )
    (toy_repo / "config.toml").write_text("x = 1\ny = 2\n")
    from .conftest import commit_all

    commit_all(toy_repo, "ints")
    task = load_task(write_task(toy_repo, base=base))
    planner = OfflinePlanner(task.spec)
    out = planner.propose(PlanContext(task, [], None, {"config.toml": "x = 1\ny = 2\n"}, 10), 6)
    for h in out:
        assert h.params is not None
        assert h.params["x"] in (1, 3, 5, 7, 9) and isinstance(h.params["x"], int)
        assert h.params["y"] in (1, 2, 4)


def test_float_choices_are_taken_as_written(toy_repo: Path) -> None:
    # A choice is no range: rounding one once read the bounds it has not, and raised TypeError.
    base = (
        (toy_repo / "task.toml")
        .read_text()
        .replace("y = { low = -5.0, high = 5.0 }", "y = { choices = [0.1, 0.2345, 4.5] }")
    )
    (toy_repo / "config.toml").write_text("x = 1.0\ny = 0.1\n")
    from .conftest import commit_all

    commit_all(toy_repo, "float choices")
    task = load_task(write_task(toy_repo, base=base))
    planner = OfflinePlanner(task.spec)
    out = planner.propose(PlanContext(task, [], None, {"config.toml": "x = 1.0\ny = 0.1\n"}, 10), 6)
    assert out
    for h in out:
        assert h.params is not None
        assert h.params["y"] in (0.1, 0.2345, 4.5)


def test_config_values_keep_comments_and_tables() -> None:
    text = "[opt]\nlr = 0.1  # step size\n[sched]\nlr = 0.1\n"
    search, replace = set_value(text, "sched.lr", 0.5)
    assert text.replace(search, replace) == "[opt]\nlr = 0.1  # step size\n[sched]\nlr = 0.5\n"
