"""Curve digests: the flags on synthetic curves, digest.json, bounded log reads, and a real run whose
validation peaks early showing it in digest.json, the planner's prompt, the learning and report.md."""

from __future__ import annotations

import itertools
import json
import math
import random
from pathlib import Path
from typing import Any

import pytest

from slurm_autoresearch import digest
from slurm_autoresearch.curve import Point, finished, last_run, read_ends
from slurm_autoresearch.digest import LINE_CHARS, POINTS, summarize
from slurm_autoresearch.errors import TaskError
from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch, open_run
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.planners import PlanContext
from slurm_autoresearch.planners.base import history
from slurm_autoresearch.planners.prompt import CURVE_TRIALS, history_text, user_text
from slurm_autoresearch.trial import Decision, Trial, TrialState

from .conftest import claude_task, commit_all, invoke, write_task

STEPS = list(range(0, 1001, 50))  # 21 reports, as a validation loop every 50 steps would give


def decay(scale: float, tau: float, floor: float, noise: float = 0.0, seed: int = 0) -> list[Point]:
    rng = random.Random(seed)
    return [(s, floor + scale * math.exp(-s / tau) + rng.gauss(0, noise)) for s in STEPS]


def flags(train: list[Point], val: list[Point], val_goal: str = "min") -> tuple[str, ...]:
    found = summarize(train, val, val_goal=val_goal)
    assert found is not None
    return found.flags


# -- the flags, one synthetic curve each --------------------------------------------------------


def test_a_clean_curve_has_no_flags() -> None:
    train = decay(1.0, 300, 0.3, noise=0.01, seed=1)
    val = decay(0.5, 300, 0.5, noise=0.003, seed=2)
    assert flags(train, val) == ()
    # the same curves as a score that rises (higher is better) are as clean
    assert flags(train, [(s, 1 - v) for s, v in val], val_goal="max") == ()
    # and a noisy minibatch loss printed every 10 steps is noise, not instability
    noisy = [
        (s, 0.3 + 2.0 * math.exp(-s / 200) + random.Random(3).gauss(0, 0.05)) for s in range(0, 1001, 10)
    ]
    assert flags(noisy, val) == ()


def test_diverged_at_the_first_non_finite_or_blown_up_training_loss() -> None:
    blown = summarize([(0, 1.0), (100, 0.8), (200, 0.6), (300, 5.0), (400, math.nan)], [])
    assert blown is not None and blown.flags == ("diverged",) and blown.diverged_at == 300
    nan = summarize([(0, 1.0), (100, 0.8), (200, math.nan)], [])
    assert nan is not None and nan.flags == ("diverged",) and nan.diverged_at == 200
    assert "diverged at step 200" in nan.line() and nan.note() == "diverged at step 200"
    # a validation loss that climbs fourfold is overfitting, not divergence
    val = [(s, 0.2 + 0.004 * s) for s in STEPS]
    climbing = summarize([], val)
    assert climbing is not None and "diverged" not in climbing.flags


def test_unstable_oscillations_and_spikes() -> None:
    zigzag = [(s, 1.0 - 0.0005 * s + 0.2 * (-1) ** i) for i, s in enumerate(STEPS)]
    assert flags(zigzag, []) == ("unstable",)
    smooth = decay(1.0, 300, 0.3)
    spiky = [(s, v + (0.8 if i in (6, 14) else 0.0)) for i, (s, v) in enumerate(smooth)]
    assert flags(spiky, []) == ("unstable",)
    one_spike = [(s, v + (0.8 if i == 6 else 0.0)) for i, (s, v) in enumerate(smooth)]
    assert flags(one_spike, []) == ()  # one bad batch is not instability


def test_a_nan_is_diverged_and_the_swings_before_it_are_unstable_too() -> None:
    smooth = [*decay(1.0, 300, 0.3)[:15], (750, math.nan)]
    assert flags(smooth, []) == ("diverged",)  # no warning before the blow-up: a guard is the fix
    zigzag = [(s, 1.0 - 0.0005 * s + 0.2 * (-1) ** i) for i, s in enumerate(STEPS[:15])]
    swung = summarize([*zigzag, (750, math.nan)], [])
    assert swung is not None and swung.flags == ("diverged", "unstable") and swung.diverged_at == 750


def test_early_peak_and_the_training_gap() -> None:
    train = [(s, 0.1 + math.exp(-s / 300)) for s in STEPS]
    val = [(s, v + 0.0006 * max(0, s - 300)) for s, v in decay(0.5, 100, 0.5, noise=0.003, seed=4)]
    found = summarize(train, val)
    assert found is not None and found.flags == ("early-peak", "gap-widening")
    assert found.val is not None and found.val.best is not None and found.val.best[0] == 300
    assert found.note() == "val_loss best early (step 300), then worse, train-val gap widening"
    # a late best is no early peak, whatever comes after it
    late = [(s, v + 0.0006 * max(0, s - 700)) for s, v in decay(0.5, 100, 0.5, noise=0.003, seed=4)]
    assert "early-peak" not in flags(train, late)
    # a decline within the noise is none either
    wobble = [(s, v + 0.002 * max(0, s - 300) / 700) for s, v in decay(0.5, 100, 0.5, noise=0.003, seed=4)]
    assert "early-peak" not in flags([], wobble)


def test_plateau_when_validation_is_flat_from_early_on() -> None:
    rng = random.Random(5)
    flat = [(s, 0.6 + rng.gauss(0, 0.005)) for s in STEPS]
    assert flags([], flat) == ("plateau",)
    assert flags([], decay(0.5, 40, 0.5, noise=0.002, seed=6)) == ("plateau",)  # done by step ~150
    assert flags([], decay(0.5, 400, 0.5, noise=0.002, seed=6)) == ()  # still learning


def test_gap_widening_when_training_improves_and_validation_stalls() -> None:
    train = [(s, 1.0 - 0.0008 * s) for s in STEPS]
    rng = random.Random(7)
    stalls = [(s, 0.8 - 0.0004 * min(s, 500) + rng.gauss(0, 0.002)) for s in STEPS]
    assert flags(train, stalls) == ("gap-widening",)
    improves = [(s, 0.8 - 0.0003 * s) for s in STEPS]
    assert flags(train, improves) == ()


def test_curve_names_default_to_the_metrics_and_need_a_direction_otherwise(toy_repo: Path) -> None:
    spec = load_task(write_task(toy_repo)).spec
    assert (spec.curves.train, spec.curves_val, spec.curves_val_goal) == ("loss", "score", "max")
    stop = load_task(write_task(toy_repo, '[early_stop]\nmetric = "val_loss"\ngoal = "min"\n')).spec
    assert (stop.curves_val, stop.curves_val_goal) == ("val_loss", "min")
    with pytest.raises(TaskError, match=r"\[curves\] val 'val_acc' needs its direction"):
        load_task(write_task(toy_repo, '[curves]\nval = "val_acc"\n'))
    with pytest.raises(TaskError, match=r"\[curves\] val: found .val acc."):
        load_task(write_task(toy_repo, '[curves]\nval = "val acc"\nval_goal = "max"\n'))


def test_too_few_points_say_nothing_but_divergence() -> None:
    assert summarize([(0, 1.0)], [(0, 0.5)]) is None
    short = summarize([(0, 1.0), (10, 0.5)], [(0, 0.9), (10, 1.4), (20, 1.9)])
    assert short is not None and short.flags == ()
    assert short.line() == "curve val_loss 0.9@0 1.4@10 1.9@20 best 0.9@0; train loss 1->0.5"


# -- digest.json --------------------------------------------------------------------------------


def test_digest_keeps_a_few_points_and_round_trips(tmp_path: Path) -> None:
    val = decay(0.5, 100, 0.5)
    val = [(s, v + 0.0006 * max(0, s - 300)) for s, v in val]
    found = summarize([(s, 1.0 - 0.0008 * s) for s in STEPS], val)
    assert found is not None and found.val is not None and found.train is not None
    assert len(found.val.points) == POINTS and found.val.count == len(STEPS)
    assert found.val.best in found.val.points  # the best step is among the points shown
    assert found.val.points[0][0] == 0 and found.val.points[-1][0] == 1000
    digest.write(tmp_path, found)
    assert digest.read(tmp_path) == found
    digest.write(tmp_path, None)  # a retry without a curve leaves no stale digest
    assert digest.read(tmp_path) is None and not (tmp_path / digest.DIGEST_FILE).exists()


def test_a_digest_file_is_numbers_and_fixed_words_or_nothing(tmp_path: Path) -> None:
    good = summarize([(0, 1.0), (10, 0.5)], [])
    assert good is not None
    data: dict[str, Any] = good.to_dict()
    data["flags"] = ["unstable", "\x1b[2J rm -rf"]
    data["train"]["name"] = "loss\x1b]8;;http://x\x07 <b>"
    path = tmp_path / digest.DIGEST_FILE
    path.write_text(json.dumps(data))
    hostile = digest.read(tmp_path)
    assert hostile is not None and hostile.flags == ("unstable",)
    assert hostile.train is not None and hostile.train.name == "loss8http//xb"
    for bad in ({"flags": "x"}, {**data, "train": {"name": "x", "goal": "up"}}, [1, 2], None):
        path.write_text(json.dumps(bad))
        assert digest.read(tmp_path) is None
    path.write_text(json.dumps({**data, "pad": "x" * 20_000}))
    assert digest.read(tmp_path) is None  # not ours: too big
    for junk in ("[" * 15_000, "\xff\xfe", "NaN"):
        path.write_bytes(junk.encode("latin-1"))
        assert digest.read(tmp_path) is None


def test_a_big_log_is_read_at_both_ends_only(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    with log.open("w") as fh:
        for step in range(0, 200_000):
            fh.write(
                f"step {step} loss {1 / (step + 1):.6f} val_loss {2 / (step + 1):.6f} tqdm noise noise\n"
            )
    assert log.stat().st_size > 4 * (2 << 20)
    text = read_ends(log)
    assert len(text.encode()) <= 2 << 20 and text.startswith("step 0 loss 1.000000 ")
    assert text.endswith("step 199999 loss 0.000005 val_loss 0.000010 tqdm noise noise\n")
    train, val, none = finished(log, ["loss", "val_loss", ""])
    assert train[0] == (0, 1.0) and val[-1][0] == 199_999 and none == []
    assert all(a[0] < b[0] for a, b in itertools.pairwise(train))


def test_a_retried_log_keeps_the_last_attempts_curve(tmp_path: Path) -> None:
    assert last_run([(0, 1.0), (10, 0.5), (0, 0.9), (10, 0.4)]) == [(0, 0.9), (10, 0.4)]
    log = tmp_path / "train.log"
    log.write_text(
        "step 0 loss 1\nstep 10 loss 0.5\n[ara] step 99 loss 7\nstep 0 loss 0.9\nstep 10 loss 0.4\n"
    )
    assert finished(log, ["loss"]) == [[(0, 0.9), (10, 0.4)]]


# -- the planner's history stays bounded -------------------------------------------------------


def test_the_prompt_shows_a_bounded_number_of_bounded_curve_lines(toy_repo: Path) -> None:
    task = load_task(write_task(toy_repo))
    trials = []
    for i in range(1, 31):
        h = Hypothesis(f"idea {i}", "why")
        trials.append(
            Trial(
                id=f"T{i:04d}",
                seq=i,
                title=h.title,
                source="offline",
                hypothesis=h,
                state=TrialState.DONE,
                decision=Decision.DISCARD,
                metric=0.5,
            )
        )
    long_name = "v" * 40
    wide = summarize(
        [(s * 10**6, -1.234567e-300) for s in range(50)],
        [(s * 10**6, -1.234567e-300 * (s % 7)) for s in range(50)],
        train_name=long_name,
        val_name=long_name,
        val_goal="max",
    )
    assert wide is not None and len(wide.line()) <= LINE_CHARS
    digests = {t.id: wide for t in trials}
    text = history_text(PlanContext(task, trials, None, {}, 5, digests=digests))
    curve_lines = [line for line in text.splitlines() if line.startswith("  curve ")]
    assert len(curve_lines) == CURVE_TRIALS
    assert text.splitlines()[-1].startswith("  curve ") and "T0023" in text.split(curve_lines[0])[0]
    assert "T0022 " in text and "T0022" not in "".join(text.split("T0023")[1:])  # older: no curve
    without = history_text(PlanContext(task, trials, None, {}, 5))
    assert "curve" not in without


# -- a real run ---------------------------------------------------------------------------------

EARLY_PEAK_TRAIN = '''\
"""Training that overfits: validation loss is best at step 10 of 40, then climbs; training falls."""
import math
import os
import tomllib

cfg = tomllib.load(open("config.toml", "rb"))
steps = int(os.environ.get("ARA_STEPS", "10"))
for step in range(0, steps + 1, 2):
    train = 1.0 - 0.02 * step
    val = 0.5 + 0.5 * math.exp(-step / 4) + 0.02 * max(0, step - 10)
    print(f"step {step}/{steps} loss {train:.4f} val_loss {val:.4f}", flush=True)
with open("pred.txt", "w") as fh:
    fh.write(repr(-(cfg["x"] - 3) ** 2 - (cfg["y"] + 1) ** 2))
'''

CURVES = """
[curves]
val = "val_loss"
val_goal = "min"
"""


def _early_peak_repo(repo: Path) -> None:
    (repo / "train.py").write_text(EARLY_PEAK_TRAIN)
    commit_all(repo, "a training loop that overfits")


def test_an_early_peak_reaches_the_digest_the_prompt_the_learning_and_the_report(toy_repo: Path) -> None:
    _early_peak_repo(toy_repo)
    path = write_task(toy_repo, CURVES, trials=1, parallel=1)
    path.write_text(path.read_text().replace("steps = 5", "steps = 40"))
    controller = launch(load_task(path), echo=lambda _: None)
    controller.run()
    tdir = controller.rundir.trial_dir("T0001")
    saved = json.loads((tdir / digest.DIGEST_FILE).read_text())
    assert saved["flags"] == ["early-peak", "gap-widening"]
    assert saved["val"]["best"] == [10, 0.5410] and saved["val"]["count"] == 21

    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    trials = ledger.trials()
    ledger.close()
    # What Planning.context hands the planner (the run's ledger is closed now, so its parts alone)
    rows = history(trials)
    digests = controller.planning.digests(rows)
    prompt = user_text(PlanContext(controller.planning.task, rows, trials[0], {}, 3, digests=digests), 2)
    line = next(line for line in prompt.splitlines() if line.startswith("  curve "))
    assert line == (
        "  curve val_loss 1@0 0.541@10 0.629@16 0.781@24 0.94@32 1.1@40 best 0.541@10; train loss 1->0.2; "
        "flags: early-peak, gap-widening"
    )
    assert prompt.index("T0001 ") < prompt.index(line)  # under its trial's line

    lesson = "; curve: val_loss best early (step 10), then worse, train-val gap widening"
    assert trials[0].learning.endswith(lesson)  # the rules summarizer's learning line
    report = (tdir / "report.md").read_text()
    assert "## Learning curves\n\n- flags: early-peak, gap-widening (val_loss best early (step 10)" in report
    assert "- validation `val_loss` (lower is better, 21 points): `1@0 0.541@10" in report
    run_report = controller.rundir.report.read_text()
    assert "## Learning curves that say something" in run_report and "flags: early-peak" in run_report
    page = (controller.rundir.path / "report.html").read_text()
    assert "<b>Curves:</b> curve val_loss 1@0 0.541@10" in page and "flags: early-peak, gap-widening" in page
    code, shown = invoke(["show", controller.rundir.run_id, "T0001"], toy_repo)
    assert code == 0 and "## Learning curves" in shown and "flags: early-peak, gap-widening" in shown

    # A run from before digests: resuming writes what is missing, with the trial's report.
    (tdir / digest.DIGEST_FILE).unlink()
    (tdir / "report.md").unlink()
    open_run(controller.rundir, echo=lambda _: None).run(reruns_only=True)
    again = digest.read(tdir)
    assert again is not None and again.flags == ("early-peak", "gap-widening")
    assert "## Learning curves" in (tdir / "report.md").read_text()


def test_the_model_summarizer_and_planner_read_the_curve(toy_repo: Path, fake_claude: Any) -> None:
    _early_peak_repo(toy_repo)
    path = claude_task(toy_repo, CURVES, trials=3)
    path.write_text(path.read_text().replace("steps = 5", "steps = 40"))
    launch(load_task(path), echo=lambda _: None).run()
    judged = [json.dumps(r["body"]["messages"]) for r in fake_claude.calls("judge_trial")]
    assert judged and all("Learning curves (value@step): curve val_loss 1@0 0.541@10" in j for j in judged)
    planned = [json.dumps(r["body"]["messages"]) for r in fake_claude.calls("propose_hypotheses")]
    assert any("flags: early-peak, gap-widening" in p for p in planned)  # once the baseline ended
