"""Reading a run from another shell: watch, status --all, logs, diff, export; never writing."""

from __future__ import annotations

import csv
import io
import json
import re
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console

from benchmarks.big_ledger import build
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.views.status import status_document
from slurm_autoresearch.views.terminal import print_status
from slurm_autoresearch.views.watch import last_step, render, snapshot

from .conftest import write_task
from .ledgers import synthetic_run

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


def test_status_at_80_columns_keeps_ids_whole_and_cuts_titles(tmp_path: Path) -> None:
    rundir = synthetic_run(tmp_path)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        doc = status_document(rundir, ledger, limit=20)
    finally:
        ledger.close()
    console = Console(record=True, width=80)
    print_status(doc, console)
    text = console.export_text()
    lines = text.splitlines()
    assert max(len(line) for line in lines) <= 80, text
    rows = [line for line in lines if re.match(r"^ T\d{4} ", line)]
    assert [line.split()[0] for line in rows] == [f"T{i:04d}" for i in range(1, 9)], text
    assert "T0…" not in text and "T000…" not in text
    long = next(line for line in rows if line.startswith(" T0006"))
    assert "Warm the learning rate" in long and long.rstrip().endswith("…")  # cut at its end
    assert "T0004 combine" in text and "T0004 rerun" in text
    assert "trials 5 of 5 budgeted, + 1 repeat, 1 rerun, 1 combination" in " ".join(lines)
    assert "10.0 min (+ 2.0 min of `ara rerun` after it)" in text
    wide = Console(record=True, width=160)
    print_status(doc, wide)
    shown = wide.export_text()
    assert "GPU-s" in shown and "pid:4008" in shown  # room for every column


def test_rerun_of_a_finished_run_counts_apart_and_exports_the_searched_params(toy_repo: Path) -> None:
    path = write_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n', trials=2, parallel=1)
    assert _ara("submit", str(path), cwd=toy_repo).returncode == 0
    before = json.loads(_ara("status", "--json", cwd=toy_repo).stdout)
    run_id, report = before["run"]["id"], toy_repo / ".ara" / "runs" / before["run"]["id"] / "report.md"
    wall_line = re.search(r"wall time [\d.]+ min", report.read_text())
    time.sleep(2.0)  # a gap a rerun must not add to the run's wall time
    out = _ara("rerun", run_id, "T0002", "--seeds", "2", cwd=toy_repo)
    assert out.returncode == 0, out.stdout + out.stderr
    doc = json.loads(_ara("status", "--json", cwd=toy_repo).stdout)
    assert doc["budget"]["trials"] == {
        "used": 2, "limit": 2, "repeats": 0, "promotions": 0, "reruns": 2, "combinations": 0
    }  # fmt: skip
    assert len(doc["trials"]) == 4 and doc["run"]["ended_at"] == before["run"]["ended_at"]
    assert doc["budget"]["wall_seconds"]["used"] == before["budget"]["wall_seconds"]["used"]
    assert 0 < doc["budget"]["wall_seconds"]["reruns"] < 60
    assert "trials 2 of 2 budgeted, + 2 reruns" in _ara("status", cwd=toy_repo).stdout
    text = report.read_text()
    assert "- trials: 2 of 2 budgeted, + 2 reruns (" in text
    assert wall_line is not None and wall_line.group(0) in text and "of `ara rerun` after it ended" in text
    rows = list(csv.DictReader(io.StringIO(_ara("export", run_id, cwd=toy_repo).stdout)))
    assert [(r["id"], r["kind"], r["param.x"], r["param.y"]) for r in rows] == [
        ("T0001", "baseline", "0.5", "2.0"),
        ("T0002", "hypothesis", "2.0", "2.0"),
        ("T0003", "rerun", "2.0", "2.0"),  # a re-run's values are those of the trial it re-runs
        ("T0004", "rerun", "2.0", "2.0"),
    ]
    lines = _ara("export", run_id, "--format", "jsonl", cwd=toy_repo).stdout.splitlines()
    assert [json.loads(line)["param.x"] for line in lines] == [0.5, 2.0, 2.0, 2.0]
