"""Reading a run from another shell: watch, status --all, logs, diff, export; never writing."""

from __future__ import annotations

import csv
import io
import json
import subprocess
import sys
from pathlib import Path

from rich.console import Console

from benchmarks.big_ledger import build
from slurm_autoresearch.watch import last_step, render, snapshot

from .conftest import write_task

ARA = [sys.executable, "-m", "slurm_autoresearch.cli"]


def _ara(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*ARA, *args], cwd=cwd, capture_output=True, text=True)


def test_last_step_reads_the_usual_training_lines() -> None:
    assert last_step("step 0/400 loss 1.0\nstep 5/400 loss 0.52 acc 0.3\n") == "step 5 loss 0.52"
    assert last_step("epoch 1 step 10 train loss: 3.2e-01\nsaving\n") == "step 10 loss 3.2e-01"
    assert last_step("step 7 loss nan\n") == "step 7 loss nan"
    assert last_step("no progress here") == ""


def test_watch_shows_slots_progress_budgets_and_decisions_of_a_big_run(tmp_path: Path) -> None:
    rundir = build(tmp_path, 300, running=3)
    ledger_before = rundir.ledger.read_bytes()
    doc = snapshot(rundir)
    console = Console(record=True, width=150)
    console.print(render(doc))
    text = console.export_text()
    for needle in ("big-bench", "best score", "trials", "GPU-hours", "running", "last decisions", "T0300"):
        assert needle in text, needle
    assert text.count("step 55 loss 0.0179") == 3  # the last step of each running trial's log
    assert len(doc["trials"]) <= 3 + 12 and doc["trials_total"] == 300
    assert rundir.ledger.read_bytes() == ledger_before  # a reader never writes


def test_status_all_logs_diff_and_export_of_a_finished_run(toy_repo: Path) -> None:
    path = write_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n', trials=3, parallel=1)
    assert _ara("submit", str(path), cwd=toy_repo).returncode == 0
    assert _ara("submit", str(path), cwd=toy_repo).returncode == 0
    out = _ara("status", "--all", "--json", cwd=toy_repo)
    runs = json.loads(out.stdout)
    assert len(runs) == 2 and all(r["state"] == "finished" and r["best"]["trial"] for r in runs)
    assert runs[0]["trials"] == {"used": 3, "limit": 3}
    table = _ara("status", "--all", cwd=toy_repo).stdout
    assert runs[0]["id"] in table and runs[1]["id"] in table
    run_id = runs[-1]["id"]
    logs = _ara("logs", run_id, "T0002", cwd=toy_repo)
    assert logs.returncode == 0 and "[ara] trial T0002" in logs.stdout and "[ara] completed" in logs.stdout
    follow = _ara("logs", run_id, "T0002", "-f", cwd=toy_repo)  # a finished trial: prints and returns
    assert follow.returncode == 0 and "[ara] completed" in follow.stdout
    diff = _ara("diff", run_id, "T0002", cwd=toy_repo)
    assert diff.returncode == 0 and "+x = 2.0" in diff.stdout
    assert "no change: the baseline" in _ara("diff", run_id, "T0001", cwd=toy_repo).stdout
    assert _ara("diff", run_id, "T0099", cwd=toy_repo).returncode == 2
    rows = list(csv.DictReader(io.StringIO(_ara("export", run_id, cwd=toy_repo).stdout)))
    assert [r["id"] for r in rows] == ["T0001", "T0002", "T0003"] and rows[1]["title"] == "x to 2"
    lines = _ara("export", run_id, "--format", "jsonl", cwd=toy_repo).stdout.splitlines()
    assert json.loads(lines[0])["decision"] == "keep" and len(lines) == 3
    target = toy_repo / "out.csv"
    assert _ara("export", run_id, "-o", str(target), cwd=toy_repo).returncode == 0
    assert target.read_text().startswith("id,state,decision,metric")
