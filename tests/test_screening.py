"""Screening that pays: the cost model (start-up + per step), the auto plan, and a successive-halving
round through a real `ara submit` on the toy task (local executor, git, SQLite, subprocesses)."""

from __future__ import annotations

import json
import sqlite3
import tomllib
from pathlib import Path

import pytest
from pydantic import ValidationError

from slurm_autoresearch import cost, fidelity
from slurm_autoresearch.executors import JobSpec, JobUpdate
from slurm_autoresearch.executors.local import LocalExecutor
from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.rundir import find_run
from slurm_autoresearch.spec import TaskSpec, format_validation_error
from slurm_autoresearch.trial import Decision, Trial, TrialKind, TrialState

from .conftest import TASK, commit_all, invoke, write_task


def _spec(extra: str = "") -> TaskSpec:
    return TaskSpec.model_validate(tomllib.loads(TASK.format(trials=5, parallel=1) + extra))


# -- the cost model ---------------------------------------------------------------------------


def test_fit_recovers_start_up_and_per_step_cost() -> None:
    points = [(1000, 10 + 0.01 * 1000), (1000, 10 + 0.01 * 1000), (125, 10 + 0.01 * 125)]
    model = cost.fit(points)
    assert model is not None and model.budgets == (125, 1000) and model.jobs == 3
    assert model.fixed == pytest.approx(10.0) and model.per_step == pytest.approx(0.01)
    assert model.seconds(500) == pytest.approx(15.0)
    assert cost.fit([(1000, 20.0), (1000, 21.0)]) is None  # one step budget says nothing per step


def test_fit_never_gives_a_cost_that_falls_with_steps_or_a_negative_start_up() -> None:
    falling = cost.fit([(100, 9.0), (1000, 8.0)])  # noise from a shared node
    assert falling is not None and falling.per_step == 0.0 and falling.fixed == pytest.approx(8.5)
    steep = cost.fit([(100, 0.5), (1000, 10.0)])  # the line would start below zero
    assert steep is not None and steep.fixed == 0.0 and steep.per_step > 0


def test_observed_uses_gpu_seconds_where_jobs_were_charged_any() -> None:
    def row(seq: int, steps: int, elapsed: float, gpu: float) -> Trial:
        return Trial(
            f"T{seq:04d}",
            seq,
            "t",
            "idea",
            Hypothesis("t"),
            state=TrialState.DONE,
            metric=0.5,
            steps=steps,
            elapsed=elapsed,
            gpu_seconds=gpu,
        )

    crashed = Trial("T0009", 9, "t", "idea", Hypothesis("t"), steps=10, elapsed=1.0)  # no metric
    points, unit = cost.observed([row(1, 100, 5.0, 0.0), row(2, 10, 2.0, 0.0), crashed], 100)
    assert unit == "elapsed" and sorted(points) == [(10, 2.0), (100, 5.0)]
    points, unit = cost.observed([row(1, 100, 5.0, 4.0), row(2, 10, 2.0, 1.5)], 100)
    assert unit == "gpu_seconds" and sorted(points) == [(10, 1.5), (100, 4.0)]


def test_ladders_halve_from_an_eighth_to_the_full_budget() -> None:
    rungs = cost.ladder(1000, 125, 8, 1, halving=True)
    assert [(r.steps, r.runs) for r in rungs] == [(125, 8), (250, 4), (500, 2), (1000, 1)]
    assert [(r.steps, r.runs) for r in cost.ladder(1000, 125, 4, 1, True)] == [(125, 4), (250, 2), (1000, 1)]
    assert [(r.steps, r.runs) for r in cost.ladder(1000, 125, 4, 1, False)] == [(125, 4), (1000, 1)]
    assert cost.next_rung(3, 250, 1000, 2, True) == cost.Rung(1000, 2)  # no more than `promote` would go


def test_saving_weighs_every_jobs_start_up_against_the_steps_spared() -> None:
    model = cost.Model(fixed=10.0, per_step=0.01, jobs=4, budgets=(125, 1000))
    plain = cost.saving(model, cost.ladder(1000, 125, 4, 1, False))
    # a round: 4 jobs at 125 steps (11.25 s each) and 1 at 1000 (20 s), against 4 at 1000
    assert plain.screened == pytest.approx((4 * 11.25 + 20) / 4) and plain.full == pytest.approx(20.0)
    assert plain.fraction == pytest.approx(0.1875)
    halving = cost.saving(model, cost.ladder(1000, 125, 8, 1, True))
    assert halving.screened == pytest.approx((8 * 11.25 + 4 * 12.5 + 2 * 15 + 20) / 8)
    assert halving.fraction < 0  # 15 start-ups per 8 hypotheses cost more than the steps spared
    # at the break-even start-up the ladder costs what the full budget does
    even = cost.Model(halving.break_even, 0.01, 4, (125, 1000))
    assert cost.saving(even, halving.rungs).fraction == pytest.approx(0.0, abs=1e-9)
    assert cost.saving(cost.Model(1.0, 0.01, 4, (125, 1000)), halving.rungs).fraction > 0.3


def _costed(fixed: float, per_step: float) -> list[Trial]:
    """The baseline's first array: three seeds at the full 40 steps and one run at 5."""
    return [
        Trial(
            f"T{i:04d}",
            i,
            "baseline",
            "baseline",
            Hypothesis("baseline"),
            state=TrialState.DONE,
            metric=1.0,
            steps=steps,
            elapsed=fixed + per_step * steps,
            kind=kind,
        )
        for i, (steps, kind) in enumerate(
            [(40, TrialKind.BASELINE), (40, TrialKind.REPEAT), (40, TrialKind.REPEAT), (5, TrialKind.REPEAT)],
            1,
        )
    ]


def test_auto_screens_only_where_the_model_says_it_saves() -> None:
    spec = _spec('\n[fidelity]\nscreen_steps = "auto"\nfull_steps = 40\nhalving = true\nround_size = 8\n')
    assert spec.fidelity.auto and spec.fidelity.screen_steps == 5 and spec.screening
    cheap = fidelity.choose_plan(spec, _costed(fixed=0.2, per_step=0.1), offset=2)
    assert cheap.screen and cheap.halving and cheap.offset == 2 and cheap.screen_steps == 5
    assert cheap.predicted is not None and cheap.predicted > 0.4 and "screening is on" in cheap.why
    assert cheap.model is not None and cheap.model["fixed"] == pytest.approx(0.2)
    # start-up too costly for halving's 15 jobs per 8 hypotheses, not for plain screening's 9
    middle = fidelity.choose_plan(spec, _costed(fixed=2.0, per_step=0.1), offset=0)
    assert middle.screen and not middle.halving
    costly = fidelity.choose_plan(spec, _costed(fixed=30.0, per_step=0.01), offset=0)
    assert not costly.screen and "screening is off" in costly.why and "saves only below" in costly.why
    unmeasured = fidelity.choose_plan(spec, _costed(1.0, 0.1)[:3], offset=0)
    assert not unmeasured.screen and unmeasured.model is None
    assert fidelity.Plan.from_dict(cheap.to_dict()) == cheap


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ("[fidelity]\nauto = true\n", "[fidelity] auto and halving need screen_steps"),
        ("[fidelity]\nhalving = true\n", "[fidelity] auto and halving need screen_steps"),
        ('[fidelity]\nscreen_steps = "eighth"\n', "screen_steps: found 'eighth'"),
        ("[fidelity]\nscreen_steps = 1\nmin_saving = 1.0\n", "min_saving"),
    ],
)
def test_fidelity_keys_are_checked(extra: str, message: str) -> None:
    with pytest.raises(ValidationError) as info:
        _spec("\n" + extra)
    assert message in format_validation_error("task.toml", info.value)


# -- through `ara submit` ---------------------------------------------------------------------


def _ledger(repo: Path) -> tuple[list[Trial], dict[str, object]]:
    ledger = Ledger.open(find_run(None, repo / ".ara").ledger, readonly=True)
    try:
        return ledger.trials(), ledger.meta()
    finally:
        ledger.close()


def test_a_halving_round_climbs_from_an_eighth_to_the_full_budget(toy_repo: Path) -> None:
    """Eight ideas at 1 step, the better half at 2, then 4, the best at the full 8 steps. The toy's
    score ignores the steps, so every rung must rank the same ideas first."""
    xs = [3.0, 2.5, 3.8, 1.5, 4.8, 0.6, -1.0, 6.0]  # scores -(x-3)^2 - 9; the baseline has x = 0.5
    ideas = "".join(f'[[ideas]]\ntitle = "x to {x}"\nconfig = {{ x = {x} }}\n' for x in xs)
    rule = "[fidelity]\nscreen_steps = 1\nfull_steps = 8\nhalving = true\nround_size = 8\n"
    path = write_task(toy_repo, ideas + rule, trials=9)
    code, output = invoke(["submit", str(path)], toy_repo)
    assert code == 0, output
    trials, _ = _ledger(toy_repo)
    by_id = {t.id: t for t in trials}
    screened = [t for t in trials if t.kind is TrialKind.HYPOTHESIS]
    assert len(screened) == 8 and all(
        t.steps == 1 and t.fidelity == "screen" and t.round == 1 for t in screened
    )

    def climbers(steps: int) -> set[str]:
        rows = [t for t in trials if t.kind is TrialKind.PROMOTE and t.steps == steps]
        assert all(t.of in by_id and by_id[t.of].kind is TrialKind.HYPOTHESIS for t in rows)
        return {by_id[t.of or ""].title for t in rows}

    # x = -1 and 6 score below the baseline's screen run: out at the first rung, whatever the room
    assert climbers(2) == {"x to 3.0", "x to 2.5", "x to 3.8", "x to 1.5"}
    assert climbers(4) == {"x to 3.0", "x to 2.5"}  # no incumbent runs at 2 steps: the best half
    assert climbers(8) == {"x to 3.0"}
    (final,) = [t for t in trials if t.kind is TrialKind.PROMOTE and t.steps == 8]
    assert final.fidelity == "full" and final.decision is Decision.KEEP
    middle = [t for t in trials if t.kind is TrialKind.PROMOTE and t.steps in (2, 4)]
    assert all(t.fidelity == "screen" for t in middle)
    assert [t.decision for t in middle].count(Decision.PROMOTED) == 3  # 2 of 4, then 1 of 2
    assert not [t for t in trials if t.decision is Decision.KEEP and t.fidelity == "screen"]
    promoted = [t for t in trials if t.decision is Decision.PROMOTED]
    assert any("; 2 steps as " in t.reason for t in promoted) and any(
        "full budget as" in t.reason for t in promoted
    )
    # what it saved: the 7 ideas dropped on the way would each have cost a full-budget job
    saved = fidelity.savings(trials, 8, 1)
    full = [t.elapsed or 0.0 for t in trials if t.fidelity == "full" and t.elapsed is not None]
    expected = sum(full) + 7 * sum(full) / len(full)
    assert saved.full_budget_slot_hours * 3600 == pytest.approx(expected)
    code, output = invoke(["status", "--json"], toy_repo)
    assert json.loads(output)["fidelity"]["promoted"] == 1


_PER_STEP_TRAIN = 'steps = int(os.environ.get("ARA_STEPS", "10"))\n'


def _auto_task(repo: Path, per_step: float) -> Path:
    """Training that sleeps per_step seconds a step: its cost is known, so auto's choice is."""
    train = (repo / "train.py").read_text()
    assert _PER_STEP_TRAIN in train
    sleep = 'time.sleep(cfg.get("per_step", 0.0) * steps)\n'
    (repo / "train.py").write_text(train.replace(_PER_STEP_TRAIN, _PER_STEP_TRAIN + sleep))
    (repo / "config.toml").write_text(f"x = 0.5\ny = 2.0\nper_step = {per_step}\n")
    commit_all(repo, "per-step cost")
    ideas = "".join(f'[[ideas]]\ntitle = "x to {x}"\nconfig = {{ x = {x} }}\n' for x in (3.0, 1.0, 2.0, 0.0))
    # the first array alone measures: no hypothesis starts beside it at the full budget
    base = TASK.format(trials=5, parallel=2).replace(
        "poll_seconds = 0.05", "poll_seconds = 0.05\nwait_for_baseline = true"
    )
    return write_task(repo, ideas + '[fidelity]\nscreen_steps = "auto"\nfull_steps = 40\n', base=base)


def test_auto_screens_where_steps_cost_more_than_start_up(toy_repo: Path) -> None:
    code, output = invoke(["submit", str(_auto_task(toy_repo, per_step=0.1))], toy_repo)
    assert code == 0, output
    trials, meta = _ledger(toy_repo)
    plan = fidelity.Plan.from_dict(meta["fidelity_plan"])  # type: ignore[arg-type]
    assert plan.screen and plan.screen_steps == 5 and plan.offset == 0, plan.why
    assert plan.model is not None and 0.07 < plan.model["per_step"] < 0.2, plan.model
    assert plan.predicted is not None and plan.predicted > 0.1
    short = [t for t in trials if t.kind is TrialKind.REPEAT and t.steps == 5]
    assert len(short) == 1 and short[0].fidelity == "screen"  # measured in the baseline's first array
    ideas = [t for t in trials if t.kind is TrialKind.HYPOTHESIS]
    assert len(ideas) == 4 and all(t.steps == 5 and t.fidelity == "screen" for t in ideas)
    (promotion,) = [t for t in trials if t.kind is TrialKind.PROMOTE]
    assert promotion.steps == 40 and {t.title for t in ideas if t.id == promotion.of} == {"x to 3.0"}
    assert "fidelity (auto): start-up" in (find_run(None, toy_repo / ".ara").path / "report.md").read_text()


def test_auto_does_not_screen_where_start_up_is_the_cost(toy_repo: Path) -> None:
    code, output = invoke(["submit", str(_auto_task(toy_repo, per_step=0.0))], toy_repo)
    assert code == 0, output
    assert "screening is off" in output
    trials, meta = _ledger(toy_repo)
    plan = fidelity.Plan.from_dict(meta["fidelity_plan"])  # type: ignore[arg-type]
    assert not plan.screen and plan.predicted is not None and plan.predicted < 0.1, plan.why
    ideas = [t for t in trials if t.kind is TrialKind.HYPOTHESIS]
    assert len(ideas) == 4 and all(t.steps == 40 and t.fidelity == "full" for t in ideas)
    assert not [t for t in trials if t.kind is TrialKind.PROMOTE]
    code, output = invoke(["status", "--json"], toy_repo)
    assert "screening is off" in json.loads(output)["fidelity"]["plan"]["why"]


class _DiesAfterPlan(LocalExecutor):
    """An executor that fails as a full disk would at the first poll after the fifth job: the
    baseline's first array (3 seeds and the screen run) has measured, the plan is made, and a
    hypothesis has been submitted."""

    submitted = 0
    failed = False

    def submit(self, jobs: list[JobSpec]) -> dict[str, str]:
        type(self).submitted += len(jobs)
        return super().submit(jobs)

    def poll(self) -> list[JobUpdate]:
        if type(self).submitted >= 5 and not type(self).failed:
            type(self).failed = True
            raise OSError(28, "No space left on device")
        return super().poll()


def test_a_resumed_run_keeps_the_auto_plan_it_made(toy_repo: Path) -> None:
    from slurm_autoresearch.loop.launcher import launch, open_run
    from slurm_autoresearch.loop.preflight import load_task

    path = _auto_task(toy_repo, per_step=0.1)
    controller = launch(load_task(path), executor=_DiesAfterPlan(capacity=2), echo=lambda _: None)
    with pytest.raises(OSError):
        controller.run()
    _, meta = _ledger(toy_repo)
    assert meta["state"] == "failed" and isinstance(meta.get("fidelity_plan"), dict)
    before = fidelity.Plan.from_dict(meta["fidelity_plan"])
    assert before.screen, before.why
    summary = open_run(controller.rundir, echo=lambda _: None).run()
    assert summary.state == "finished", summary.reason
    trials, meta = _ledger(toy_repo)
    assert fidelity.Plan.from_dict(meta["fidelity_plan"]) == before  # not decided again
    with sqlite3.connect(controller.rundir.ledger) as conn:
        decided = conn.execute("SELECT count(*) FROM events WHERE kind = 'fidelity'").fetchone()[0]
    assert decided == 1
    ideas = [t for t in trials if t.kind is TrialKind.HYPOTHESIS]
    assert len(ideas) == 4 and all(t.steps == 5 and t.fidelity == "screen" for t in ideas)
    (promotion,) = [t for t in trials if t.kind is TrialKind.PROMOTE]
    assert promotion.steps == 40 and all(t.state is TrialState.DONE for t in trials)
