"""The bundled example runs under ara and its backlog's code edit is kept (needs the examples extra)."""

from __future__ import annotations

import shutil
from pathlib import Path

from slurm_autoresearch.launcher import launch
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.task import load_task
from slurm_autoresearch.trial import Decision

from .conftest import commit_all, git

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mil-stain"


def test_example_task_improves_on_its_baseline(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo / "mil-stain", ignore=shutil.ignore_patterns(".ara", "predictions.json"))
    git(repo, "init", "-q")
    commit_all(repo, "example")
    task_path = repo / "mil-stain" / "task.toml"
    # Baseline plus the first two backlog ideas: the batch/lr change and the slide centering edit.
    task_path.write_text(task_path.read_text().replace("trials = 12 ", "trials = 3 "))
    task = load_task(task_path)
    assert task.workdir == "mil-stain" and task.spec.budget.trials == 3
    controller = launch(task, echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    trials = {t.title: t for t in ledger.trials()}
    ledger.close()
    baseline = trials["baseline"]
    centring = trials["Centre each slide's embeddings to remove the scanner shift"]
    assert baseline.metric is not None and 0.4 < baseline.metric < 0.7
    assert centring.decision is Decision.KEEP
    assert centring.metric is not None and centring.metric > baseline.metric + 0.1
    assert all(t.elapsed is not None and t.elapsed < 60 for t in trials.values())
