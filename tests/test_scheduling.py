"""Scheduling: hypotheses planned ahead fill a freed slot at once; the batch-and-wait schedule."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from slurm_autoresearch.errors import BaselineError
from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch, make_models, open_run
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.planners import PlanContext, Planner
from slurm_autoresearch.rundir import RunDir
from slurm_autoresearch.trial import Decision, Trial, TrialKind, TrialState

from .conftest import commit_all, write_task

IDEAS = "".join(
    f'[[ideas]]\ntitle = "idea {i}"\nconfig = {{ x = {i / 2}, sleep = {3.0 + (i % 3) * 0.8} }}\n'
    for i in range(1, 9)
)


class SlowPlanner:
    """The offline planner behind a planner API that takes `delay` seconds to answer."""

    def __init__(self, inner: Planner, delay: float) -> None:
        self.inner, self.delay, self.name = inner, delay, inner.name
        self.calls: list[tuple[float, int]] = []

    def baseline(self, files: dict[str, str]) -> Hypothesis:
        return self.inner.baseline(files)

    def __getattr__(self, name: str) -> Any:  # refresh and whatever else the planner offers
        return getattr(self.inner, name)

    def propose(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        self.calls.append((time.time(), n))
        time.sleep(self.delay)
        return self.inner.propose(ctx, n)


def _sleepy_repo(repo: Path) -> None:
    (repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\nsleep = 0.3\n")
    commit_all(repo, "sleep knob")


def _run(path: Path, delay: float) -> tuple[Ledger, SlowPlanner]:
    task = load_task(path)
    planner = SlowPlanner(make_models(task, None)[0], delay)
    controller = launch(task, planner=planner, echo=lambda _: None)
    controller.run()
    return Ledger.open(controller.rundir.ledger, readonly=True), planner


def _refill_gaps(trials: list[Trial]) -> list[float]:
    """For each hypothesis started after the first round: seconds from the latest job end before
    its submission (the slot it took) to that submission."""
    ended = sorted(t.finished_at for t in trials if t.finished_at)
    gaps = []
    for t in trials[3:]:
        before = [e for e in ended if e <= (t.submitted_at or 0)]
        if before and t.kind is TrialKind.HYPOTHESIS:
            gaps.append((t.submitted_at or 0) - before[-1])
    return gaps


def test_a_freed_slot_starts_a_planned_ahead_hypothesis_at_once(toy_repo: Path) -> None:
    _sleepy_repo(toy_repo)
    path = write_task(toy_repo, IDEAS, trials=9, parallel=2)
    # Four ready: more than two slots free while one 2 s planning call is out.
    path.write_text(path.read_text().replace("poll_seconds = 0.05", "poll_seconds = 0.05\nplan_ahead = 4"))
    ledger, planner = _run(path, delay=2.0)
    trials = ledger.trials()
    assert sum(t.kind.counts_against_budget() for t in trials) == 9
    assert all(t.decision is not None for t in trials)
    titles = [t.title for t in trials if t.kind is TrialKind.HYPOTHESIS]
    assert sorted(titles) == [f"idea {i}" for i in range(1, 9)]  # none proposed twice while queued
    gaps = _refill_gaps(trials)
    # The planner takes 2 s; slots were refilled from the ready queue, not after a planning call.
    assert gaps and max(gaps) < 1.0, gaps
    # The first round was planned while the baseline ran, and started beside it or at once after.
    base = trials[0]
    assert planner.calls[0][0] < (base.decided_at or 0)
    assert min(t.submitted_at or 0 for t in trials[1:]) - (base.decided_at or 0) < 1.0
    # Planned while others ran: each says which decided results its planner had not seen.
    ahead = [t for t in trials if "planned_without" in t.hypothesis.extra]
    assert ahead
    for t in ahead:
        missing = t.hypothesis.extra["planned_without"]
        assert t.hypothesis.extra["planned_at"] < t.created_at
        for tid in missing:
            other = ledger.trial(tid)
            assert other is not None and other.decided_at is not None
            assert t.hypothesis.extra["planned_at"] < other.decided_at <= t.created_at
    assert any(t.hypothesis.extra["planned_without"] for t in ahead)
    shown = next(t for t in ahead if t.hypothesis.extra["planned_without"])
    report = (ledger.path.parent / "trials" / shown.id / "report.md").read_text()
    assert "planned ahead at" in report and shown.hypothesis.extra["planned_without"][0] in report
    # Config ideas planned on an older incumbent had their values set again on the newer one.
    assert any("planned_on" in t.hypothesis.extra for t in ahead)
    assert not [e for e in ledger.events() if e["kind"] == "rebased"]
    # The planner's calls each carried several hypotheses, and each trial bears a share of none
    # (the offline planner costs nothing) but the ledger saw every call's answer used.
    assert sum(n for _, n in planner.calls) >= 8
    ledger.close()


def test_without_planning_ahead_a_freed_slot_waits_for_the_planner(toy_repo: Path) -> None:
    _sleepy_repo(toy_repo)
    path = write_task(toy_repo, IDEAS, trials=7, parallel=2)
    path.write_text(path.read_text().replace("poll_seconds = 0.05", "poll_seconds = 0.05\nplan_ahead = 0"))
    ledger, _ = _run(path, delay=2.0)
    gaps = _refill_gaps(ledger.trials())
    assert gaps and min(gaps) >= 1.9, gaps  # the same run's slots wait out each planning call
    ledger.close()


def test_batch_schedule_waits_for_every_job_of_a_round(toy_repo: Path) -> None:
    _sleepy_repo(toy_repo)
    path = write_task(toy_repo, IDEAS, trials=7, parallel=2)
    batch = 'poll_seconds = 0.05\nschedule = "batch"'
    path.write_text(path.read_text().replace("poll_seconds = 0.05", batch))
    ledger, planner = _run(path, delay=0.0)
    hyps = [t for t in ledger.trials() if t.kind is not TrialKind.BASELINE]
    assert sum(t.kind is TrialKind.HYPOTHESIS for t in hyps) == 6
    for a in hyps:
        for b in hyps:
            if (b.submitted_at or 0) > (a.submitted_at or 0) + 0.2:  # a later round
                assert (b.submitted_at or 0) >= (a.finished_at or 0), (a.id, b.id)
    assert [n for _, n in planner.calls] == [2, 2, 2]
    ledger.close()


def test_a_hypothesis_planned_on_an_old_incumbent_is_built_on_it_when_its_edits_conflict(
    toy_repo: Path,
) -> None:
    ideas = """
    [[ideas]]
    title = "x to 2"
    config = { x = 2.0 }

    [[ideas]]
    title = "x to 2.5 by hand"
    [[ideas.edits]]
    path = "config.toml"
    search = "x = 0.5  # the x knob"
    replace = "x = 2.5"
    """
    path = write_task(toy_repo, ideas, trials=3, parallel=1)
    ledger, _ = _run(path, delay=0.0)
    base, first, second = ledger.trials()[:3]
    assert first.decision is not None and first.decision.value == "keep"
    # Planned together on the baseline; the first's keep changed the very line the second edits.
    assert second.hypothesis.extra["planned_on"] == base.id
    assert second.hypothesis.extra["planned_without"] == [first.id]
    assert second.parent_trial == base.id and second.parent == base.commit
    events = [e for e in ledger.events() if e["kind"] == "rebased"]
    assert events and events[0]["trial"] == second.id and "built on T0001" in events[0]["detail"]
    assert second.metric == -9.25  # it ran: x = 2.5 on the baseline's config
    ledger.close()


BESIDE = """
[[ideas]]
title = "quick better"
config = { x = 2.0, sleep = 0.2 }
[[ideas]]
title = "quick worse"
config = { x = -3.0, sleep = 0.2 }
"""


def test_hypotheses_run_beside_the_baseline_and_are_judged_once_it_is_measured(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 3.0\n")  # a slow baseline
    commit_all(toy_repo, "slow baseline")
    ledger, _ = _run(write_task(toy_repo, BESIDE, trials=3, parallel=3), delay=0.0)
    base, *hyps = ledger.trials()
    assert [t.title for t in hyps] == ["quick better", "quick worse"]
    for t in hyps:
        # Started in the slots the baseline left free, ended before it, decided after it.
        assert (t.submitted_at or 0) < (base.finished_at or 0)
        assert (t.finished_at or 0) < (base.finished_at or 0)
        assert (t.decided_at or 0) >= (base.decided_at or 0)
        assert t.parent_trial == base.id
    better, worse = hyps
    assert better.decision is Decision.KEEP and worse.decision is Decision.DISCARD
    assert "becomes the incumbent" not in better.reason + worse.reason  # compared with the baseline
    ledger.close()


def test_waiting_for_the_baseline_leaves_its_free_slots_idle(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 1.0\n")
    commit_all(toy_repo, "slow baseline")
    path = write_task(toy_repo, BESIDE, trials=3, parallel=3)
    waiting = "poll_seconds = 0.05\nwait_for_baseline = true"
    path.write_text(path.read_text().replace("poll_seconds = 0.05", waiting))
    ledger, planner = _run(path, delay=0.0)
    base, *hyps = ledger.trials()
    assert planner.calls[0][0] < (base.decided_at or 0)  # planned meanwhile, started after
    assert all((t.submitted_at or 0) >= (base.decided_at or 0) for t in hyps)
    ledger.close()


def test_a_failed_baseline_cancels_the_hypotheses_beside_it(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 1.0\ncrash = true\n")
    commit_all(toy_repo, "crashing baseline")
    ideas = '[[ideas]]\ntitle = "long"\nconfig = { crash = false, sleep = 60.0 }\n'
    task = load_task(write_task(toy_repo, ideas, trials=2, parallel=2))
    controller = launch(task, echo=lambda _: None)
    started = time.monotonic()
    with pytest.raises(BaselineError, match=r"boom from train\.py"):
        controller.run()
    assert time.monotonic() - started < 30  # not the hypothesis's minute
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    base, long = ledger.trials()
    assert base.decision is Decision.CRASH and long.title == "long"
    assert long.decision is Decision.CRASH and long.job_state == "cancelled"
    assert long.reason == "cancelled: baseline T0001 failed"
    ledger.close()


def test_a_controller_killed_while_hypotheses_wait_for_the_baseline_judges_them_on_resume(
    toy_repo: Path,
) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 4.0\n")
    commit_all(toy_repo, "slow baseline")
    task = load_task(write_task(toy_repo, BESIDE, trials=3, parallel=3))
    controller = None

    def sleep(seconds: float) -> None:
        assert controller is not None
        waiting = controller.ledger.in_state(TrialState.WAITING)
        if len(waiting) == 2 and controller.state.incumbent is None:
            raise KeyboardInterrupt("killed")  # both quick ideas measured, the baseline still runs
        time.sleep(seconds)

    controller = launch(task, echo=lambda _: None, sleep=sleep)
    assert controller.run().state == "interrupted"
    resumed = open_run(RunDir(controller.rundir.path), echo=lambda _: None).run()
    assert resumed.state == "finished"
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    base, better, worse = ledger.trials()
    assert (better.decided_at or 0) >= (base.decided_at or 0)
    assert better.decision is Decision.KEEP and worse.decision is Decision.DISCARD
    ledger.close()
