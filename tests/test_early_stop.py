"""Early stopping: curves read from progress lines; trials behind the incumbent's curve or diverging
are cancelled, the first discarded and the second a crash, each with its reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from slurm_autoresearch.curve import Curves, at, load, parse_points, progress_pattern
from slurm_autoresearch.errors import TaskError
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.trial import Decision

from .conftest import commit_all, write_task

CURVE_TRAIN = '''\
"""Training with a curve: val_score climbs towards the final score, one report every 2 steps."""
import math
import os
import time
import tomllib

cfg = tomllib.load(open("config.toml", "rb"))
steps = int(os.environ.get("ARA_STEPS", "10"))
final = -(cfg["x"] - 3) ** 2 - (cfg["y"] + 1) ** 2
for step in range(0, steps + 1, 2):
    value = final - 4.0 * (1 - step / steps)
    if step >= cfg.get("nan_at", 10**9):
        value = math.nan
    print(f"step {step}/{steps} loss {1 / (step + 1):.3f} val_score {value:.4f}", flush=True)
    time.sleep(0.1)
with open("pred.txt", "w") as fh:
    fh.write(repr(final))
'''

IDEAS = """
[[ideas]]
title = "far off"
config = { x = -4.0 }

[[ideas]]
title = "closer"
config = { x = 2.0 }

[[ideas]]
title = "blows up"
config = { x = 2.5, nan_at = 20 }

[early_stop]
metric = "val_score"
goal = "max"
behind = 2.0
patience = 3
after = 0.2
"""


def test_parse_points_and_interpolation() -> None:
    pattern = progress_pattern("val_loss")
    text = (
        "step 10 loss 2.0 val_loss 1.5\nstep=20 val_loss=1.25\nno step here val_loss 9\n"
        "step: 30 val_loss: nan\n"
    )
    points = parse_points(text, pattern)
    assert points[:2] == [(10, 1.5), (20, 1.25)] and points[2][0] == 30
    assert at([(0, 0.0), (10, 1.0)], 5) == 0.5 and at([(0, 0.0), (10, 1.0)], 11) is None
    # a name that is the end of another name does not match it
    assert parse_points("step 3 train_val_loss 7", pattern) == []


def test_margin_comes_from_the_incumbents_runs_when_not_given(tmp_path: Path) -> None:
    curves = Curves("acc", "max", after=0.0, patience=2, sd=3.0)
    log = tmp_path / "train.log"
    log.write_text("step 10 acc 0.40\nstep 20 acc 0.42\n")
    refs = [[(0, 0.5), (100, 0.9)], [(0, 0.52), (100, 0.92)], [(0, 0.48), (100, 0.88)]]
    new = curves.read("T1", log)
    assert curves.judge("T1", new, 100, refs) is not None  # 0.42 vs 0.58 at step 20; sd 0.02
    one = Curves("acc", "max", after=0.0, patience=2)
    one.read("T2", log)
    assert one.judge("T2", one.curve("T2"), 100, refs[:1]) is None  # one run: no spread, no verdict


def test_a_retried_job_starts_its_curve_again(tmp_path: Path) -> None:
    curves = Curves("acc", "max")
    log = tmp_path / "train.log"
    log.write_text("step 10 acc 0.5\nstep 20 acc 0.6\n")
    curves.read("T1", log)
    with log.open("a") as fh:
        fh.write("trial T1 again\nstep 0 acc 0.1\nstep 10 acc 0.4\n")
    curves.read("T1", log)
    assert curves.curve("T1") == [(0, 0.1), (10, 0.4)]


def test_trailing_and_diverging_trials_are_cancelled_with_their_reasons(toy_repo: Path) -> None:
    (toy_repo / "train.py").write_text(CURVE_TRAIN)
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\nnan_at = 1000\n")
    commit_all(toy_repo, "a training loop with a curve")
    path = write_task(toy_repo, IDEAS, trials=4, parallel=1)
    path.write_text(path.read_text().replace("steps = 5", "steps = 40"))
    controller = launch(load_task(path), echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    base, far, closer, blows = ledger.trials()[:4]
    assert base.decision is Decision.KEEP and len(load(controller.rundir.trial_dir(base.id))) == 21
    assert far.decision is Decision.DISCARD and far.job_state == "stopped"
    assert far.reason.startswith("early-stopped at step") and "val_score" in far.reason
    assert (far.elapsed or 99) < 0.6 * (base.elapsed or 0)  # its slot was freed early
    assert closer.decision is Decision.KEEP and closer.job_state == "completed"
    assert blows.decision is Decision.CRASH and blows.reason.startswith("diverged: val_score is nan")
    events = [e for e in ledger.events() if e["kind"] == "early-stop"]
    assert [e["trial"] for e in events] == [far.id, blows.id]
    ledger.close()


def test_an_early_stop_metric_needs_its_direction(toy_repo: Path) -> None:
    path = write_task(toy_repo, '[early_stop]\nmetric = "val_loss"\n')
    with pytest.raises(TaskError, match=r"\[early_stop\] metric 'val_loss' needs its direction"):
        load_task(path)
