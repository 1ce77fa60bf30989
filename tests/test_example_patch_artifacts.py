"""The patch-artifacts example runs briefly under ara: baseline, decisions, validation lines and the
transfer check (needs the examples extra)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from slurm_autoresearch import transfer
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.trial import Decision, TrialKind

from .conftest import commit_all, git

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "patch-artifacts"


def test_patch_artifacts_runs_briefly_with_a_transfer_check(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    ignore = shutil.ignore_patterns(".ara", "predictions.json", "__pycache__")
    shutil.copytree(EXAMPLE, repo / "patch-artifacts", ignore=ignore)
    git(repo, "init", "-q")
    commit_all(repo, "example")
    # Baseline plus the first two backlog ideas (the detail channels, a code edit, and bigger
    # batches), single runs, then the transfer check at twice the steps, one seed each.
    overrides = [
        "run.executor=local",
        "budget.trials=3",
        "budget.steps=300",
        "noise.repeats=1",
        "validate.steps=600",
        "validate.seeds=1",
    ]
    task = load_task(repo / "patch-artifacts" / "task.toml", overrides)
    assert task.workdir == "patch-artifacts" and task.spec.budget.trials == 3
    controller = launch(task, echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    trials = ledger.trials()
    ledger.close()

    first = [t for t in trials if t.kind is not TrialKind.RERUN]
    # When both ideas are kept the loop may also try them together (timing decides).
    assert [t.title for t in first[:3]] == [
        "baseline",
        "Detail channels: feed the patch's high-frequency residual",
        "Bigger batches",
    ]
    assert all(t.kind is TrialKind.COMBINE for t in first[3:])
    assert all(t.decision is not None and t.metric is not None for t in trials)
    baseline = first[0]
    assert baseline.metric is not None and 0.3 < baseline.metric < 0.75
    assert first[1].decision is Decision.KEEP  # the detail channels beat the baseline at seed 0

    # Five evenly spaced validations on the dev split, and training progress, as `step N name value`.
    log = (controller.rundir.trial_dir(baseline.id) / "train.log").read_text()
    val_steps = [int(s) for s in re.findall(r"^step (\d+) val_loss [\d.]+ val_macro_f1 [\d.]+$", log, re.M)]
    assert val_steps == [60, 120, 180, 240, 300]
    assert re.search(r"^step 300 loss [\d.]+$", log, re.M)

    # The transfer check re-ran the keeps and the baseline at 600 steps and gave a verdict.
    checks = [t for t in trials if t.source == transfer.SOURCE]
    assert checks and all(t.steps == 600 for t in checks)
    verdict = transfer.of_run(trials, task.spec)
    assert verdict is not None and verdict.steps == 600 and len(verdict.entries) >= 2
    assert all(e.longer is not None for e in verdict.entries)
