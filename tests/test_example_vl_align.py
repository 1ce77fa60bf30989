"""The vl-align example runs briefly under ara: its backlog's code edits with the offline planner,
and the same code changes planned by Claude (the fake Messages API), curve digests included
(needs the examples extra)."""

from __future__ import annotations

import importlib.util
import re
import shutil
import sys
from pathlib import Path
from typing import Any

from slurm_autoresearch import digest
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.trial import Decision, TrialKind

from .conftest import commit_all, git

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "vl-align"


def test_vl_align_backlog_runs_briefly(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(
        EXAMPLE, repo / "vl-align", ignore=shutil.ignore_patterns(".ara", "embeddings.npz", "__pycache__")
    )
    git(repo, "init", "-q")
    commit_all(repo, "example")
    # The baseline and the three backlog ideas at half the steps, single runs (the min_delta rule).
    overrides = ["run.executor=local", "budget.trials=4", "budget.steps=300", "noise.repeats=1"]
    task = load_task(repo / "vl-align" / "task.toml", overrides)
    assert task.workdir == "vl-align" and task.spec.budget.trials == 4
    controller = launch(task, echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    trials = ledger.trials()
    ledger.close()

    by_title = {t.title: t for t in trials}
    baseline = by_title["baseline"]
    aux = by_title["Auxiliary prototype-classification loss"]
    sharp = by_title["Sharp attention pooling instead of the mean"]
    fixed = by_title["Sharp attention pooling, stabilised: gradient clipping and a max-subtracted softmax"]
    # When two ideas from one parent are kept the loop may also try them together (timing decides).
    assert all(
        t.kind is TrialKind.COMBINE for t in trials if t.id not in {baseline.id, aux.id, sharp.id, fixed.id}
    )
    assert baseline.metric is not None and 0.25 < baseline.metric < 0.5
    assert aux.decision is Decision.KEEP and aux.metric is not None and aux.metric > baseline.metric
    # The unguarded exp() overflows: the loss goes NaN, the run stops, the trial is a crash whose
    # curve digest says where it diverged.
    assert sharp.decision is Decision.CRASH and sharp.metric is None
    sharp_dir = controller.rundir.trial_dir(sharp.id)
    log = (sharp_dir / "train.log").read_text()
    assert re.search(r"^step \d+ loss nan$", log, re.M) and "FAIL: loss is nan" in log
    summary = digest.read(sharp_dir)
    assert summary is not None and "diverged" in summary.flags and summary.diverged_at is not None
    # Clipping and a max-subtracted softmax make the same attention work, well above the baseline.
    assert (
        fixed.decision is Decision.KEEP and fixed.metric is not None and fixed.metric > baseline.metric + 0.05
    )

    # Ten validations on the dev pairs and training progress, as `step N name value`.
    log = (controller.rundir.trial_dir(baseline.id) / "train.log").read_text()
    val_steps = [int(s) for s in re.findall(r"^step (\d+) val_loss [\d.]+ val_recall [\d.]+$", log, re.M)]
    assert val_steps == list(range(30, 301, 30))
    assert re.search(r"^step 300 loss [\d.]+$", log, re.M)
    assert digest.read(controller.rundir.trial_dir(baseline.id)) is not None


def _demo() -> Any:
    path = ROOT / "scripts" / "demo_vl_align.py"
    if "demo_vl_align" not in sys.modules:
        spec = importlib.util.spec_from_file_location("demo_vl_align", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["demo_vl_align"] = module
        spec.loader.exec_module(module)
    return sys.modules["demo_vl_align"]


def test_vl_align_code_changes_from_the_claude_planner(tmp_path: Path) -> None:
    """scripts/demo_vl_align.py with single runs: the four hypotheses come from the (fake) Claude
    planner, one at a time; the unguarded attention diverges, the max-subtracted one is unstable,
    clipping fixes it, and the planner was shown those curves before it proposed the fixes."""
    demo = _demo()
    result = demo.run_demo(tmp_path / "demo", extra=("noise.repeats=1",))
    assert demo.verdict(result) == [], result["submit"].stdout[-3000:] + result["submit"].stderr[-2000:]
    # The planner's prompt for the third hypothesis showed the second's divergence; the fourth's, the
    # third's instability.
    assert re.search(r"curve .*flags: diverged at step \d+", result["prompts"][2])
    assert re.search(r"curve .*flags: .*unstable", result["prompts"][3])
    for name in ("report.md", "report.html"):
        text = (result["rundir"] / name).read_text()
        assert re.search(r"curve val_recall [^\n]*flags: diverged at step \d+", text), name
        assert re.search(r"curve val_recall [^\n]*flags: unstable", text), name
