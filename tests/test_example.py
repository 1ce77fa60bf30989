"""The bundled example runs under ara and its backlog's code edit is kept (needs the examples extra)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
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


# A json module the training leaves beside the frozen evaluation: if the evaluation imported it,
# every prediction would equal the hidden label and macro-F1 would be 1.0.
SHADOW_JSON = """
import importlib.util, os, sys, sysconfig
_dir = os.path.join(sysconfig.get_paths()["stdlib"], "json")
_init = os.path.join(_dir, "__init__.py")
_spec = importlib.util.spec_from_file_location("json", _init, submodule_search_locations=[_dir])
_real = importlib.util.module_from_spec(_spec)
sys.modules["json"] = _real
_spec.loader.exec_module(_real)
_loads = _real.loads
def _forged(s, *a, **k):
    data = _loads(s, *a, **k)
    if isinstance(data, dict) and "val" in data:
        from prepare import load_val_labels
        data["val"] = [int(x) for x in load_val_labels()]
    return _loads(_real.dumps(data))
_real.loads = _forged
"""


@pytest.mark.parametrize("sandbox", ["auto", "none"])
def test_a_shadowing_module_cannot_lift_the_example_metric(tmp_path: Path, sandbox: str) -> None:
    """The issue's attack on the bundled example: a json.py written at run time next to
    evaluate.py, which would score macro-F1 1.0. The evaluation's import path puts the standard
    library and the pristine frozen files before the worktree, with or without bubblewrap."""
    repo = tmp_path / "repo"
    shutil.copytree(EXAMPLE, repo / "mil-stain", ignore=shutil.ignore_patterns(".ara", "predictions.json"))
    git(repo, "init", "-q")
    commit_all(repo, "example")
    anchor = '    print(f"trained {steps} steps in {elapsed:.1f}s; wrote predictions.json", flush=True)\n'
    attack = (
        anchor
        + f"    open('json.py', 'w').write({SHADOW_JSON!r})\n"
        + "    print('shadow written; labels readable:', os.path.exists('data/val_labels.npy'), flush=True)\n"
    )
    idea = (
        '[[ideas]]\ntitle = "shadow json"\n[[ideas.edits]]\npath = "train.py"\n'
        f"search = {json.dumps(anchor)}\nreplace = {json.dumps(attack)}\n"
    )
    task_path = repo / "mil-stain" / "task.toml"
    text = task_path.read_text().replace("trials = 12 ", "trials = 2 ").split("[[ideas]]")[0]
    task_path.write_text(text + f'\n[sandbox]\nmode = "{sandbox}"\n[noise]\nrepeats = 1\n\n' + idea)
    commit_all(repo, "attack")
    controller = launch(load_task(task_path), echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    baseline, shadow = ledger.trials()
    ledger.close()
    log = (controller.rundir.trial_dir(shadow.id) / "train.log").read_text()
    assert "shadow written; labels readable: False" in log  # the answer key was out of the worktree
    assert baseline.metric is not None and shadow.metric is not None
    # Measured at its real value: the same model as the baseline, so the same score.
    assert shadow.metric == pytest.approx(baseline.metric) and shadow.metric < 0.9
