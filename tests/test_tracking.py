"""W&B for trials: the job environment, and real offline runs of a whole toy run plus its summary."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from slurm_autoresearch.executors.base import JobSpec
from slurm_autoresearch.executors.runner import trial_env
from slurm_autoresearch.executors.tracking import (
    offline_runs,
    read_records,
    run_record,
    summary_dir,
    wandb_env,
    wandb_run_id,
)
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.spec import TrackingSection
from slurm_autoresearch.trial import Decision
from slurm_autoresearch.views.wandb_summary import spawn_summary, sync_commands

from .conftest import TRAIN, commit_all, write_task


def _env(**kwargs: Any) -> dict[str, str]:
    base: dict[str, Any] = dict(
        project="toy", run_id="toy-20260101-000000", trial_id="T0007", trial_dir=Path("/runs/x/trials/T0007")
    )
    return wandb_env(**(base | kwargs))


def test_env_names_the_trial_in_the_runs_group() -> None:
    env = _env(title="Centre each slide's\nembeddings " + "x" * 300, fidelity="screen")
    assert env["WANDB_NAME"] == "T0007"
    assert env["WANDB_RUN_GROUP"] == "toy-20260101-000000"
    assert env["WANDB_JOB_TYPE"] == "screen"
    assert env["WANDB_PROJECT"] == "toy"
    assert env["WANDB_MODE"] == "offline"
    assert env["WANDB_DIR"] == "/runs/x/trials/T0007"
    assert env["WANDB_RUN_ID"] == "toy-20260101-000000-t0007"
    notes = env["WANDB_NOTES"]
    assert notes.startswith("Centre each slide's embeddings xxx") and "\n" not in notes
    assert len(notes) <= 200


def test_env_modes_and_ids() -> None:
    assert _env(mode="online")["WANDB_MODE"] == "online"
    assert _env(mode="off")["WANDB_MODE"] == "disabled"
    assert _env()["WANDB_JOB_TYPE"] == "full"
    # W&B refuses ids with ":;,#?/'"; long ones are cut and keep a hash, so they stay distinct.
    assert wandb_run_id("My Task:v2/x", "T0001") == "my-task-v2-x-t0001"
    long_a, long_b = wandb_run_id("a" * 80, "T0001"), wandb_run_id("a" * 80, "T0002")
    assert len(long_a) == 64 and long_a != long_b


def test_trial_env_takes_title_fidelity_and_mode_from_the_job(tmp_path: Path) -> None:
    spec = JobSpec(
        trial_id="T0003",
        run_id="toy-1",
        run_dir=str(tmp_path),
        trial_dir=str(tmp_path / "trials" / "T0003"),
        worktree=str(tmp_path),
        workdir=".",
        command="true",
        eval=None,
        metric="score",
        steps=5,
        time_limit_s=60,
        gpus=0,
        frozen={},
        project="toy",
        title="x to 2",
        fidelity="screen",
        wandb="off",
    )
    env = trial_env(spec, {"WANDB_MODE": "online", "PATH": "/bin"})
    assert (env["WANDB_NAME"], env["WANDB_NOTES"], env["WANDB_JOB_TYPE"]) == ("T0003", "x to 2", "screen")
    assert env["WANDB_MODE"] == "disabled"  # the task decides, not the controller's environment
    new_keys = ("title", "fidelity", "wandb")
    old = JobSpec.from_dict({k: v for k, v in spec.to_dict().items() if k not in new_keys})
    assert trial_env(old, {})["WANDB_MODE"] == "offline"  # a job.json from before these fields


def test_tracking_section_defaults() -> None:
    assert TrackingSection().wandb == "offline" and TrackingSection().project is None
    with pytest.raises(ValueError):
        TrackingSection.model_validate({"wandb": "cloud"})


# -- real offline runs -----------------------------------------------------------------------


WANDB_TRAIN = TRAIN + ('import wandb\nrun = wandb.init(config=cfg)\nrun.log({"loss": 0.5})\nrun.finish()\n')


def test_a_run_whose_trials_never_call_wandb_still_gets_its_summary_run(toy_repo: Path) -> None:
    path = write_task(toy_repo, trials=2)
    path.write_text(path.read_text().replace('wandb = "off"', 'wandb = "offline"'))
    controller = launch(load_task(path), echo=lambda _: None)
    controller.run()
    rundir = controller.rundir
    assert not [p for t in ("T0001", "T0002") for p in offline_runs(rundir.trial_dir(t))]
    log = rundir.path / "wandb-summary.log"
    deadline = time.time() + 180
    while "W&B summary run:" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline, "the controller's summary writer did not finish"
        time.sleep(0.5)
    (summary,) = offline_runs(summary_dir(rundir.path))
    assert run_record(summary).job_type == "summary"


def test_offline_trial_runs_and_the_summary_run(toy_repo: Path) -> None:
    (toy_repo / "train.py").write_text(WANDB_TRAIN)
    commit_all(toy_repo, "log to wandb")
    path = write_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n', trials=3)
    path.write_text(path.read_text().replace('wandb = "off"', 'wandb = "offline"'))
    lines: list[str] = []
    controller = launch(load_task(path), echo=lines.append)
    rundir = controller.rundir
    controller.run()
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        trials = ledger.trials()
    finally:
        ledger.close()
    assert len(trials) == 3 and all(t.job_id for t in trials)
    for t in trials:
        tdir = rundir.trial_dir(t.id)
        (found,) = offline_runs(tdir)  # exactly one, where the ledger's trial id says
        run_id = wandb_run_id(rundir.run_id, t.id)
        assert found.name.endswith("-" + run_id)
        record = run_record(found)
        assert record.run_id == run_id
        assert record.display_name == t.id
        assert record.run_group == rundir.run_id
        assert record.job_type == t.fidelity == "full"
        assert record.notes == t.title
        assert record.project == "toy"
    assert trials[1].title == "x to 2"

    # The controller started the summary writer as the run ended; wait for it, then write it
    # again by hand: the second time replaces the first.
    log = rundir.path / "wandb-summary.log"
    deadline = time.time() + 180
    while "W&B summary run:" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline, "the controller's summary writer did not finish"
        time.sleep(0.5)
    (first,) = offline_runs(summary_dir(rundir.path))  # written at the run's end: no report or sync
    assert run_record(first).job_type == "summary"
    done = subprocess.run(
        [sys.executable, "-m", "slurm_autoresearch.views.wandb_summary", str(rundir.path)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr
    (summary,) = offline_runs(summary_dir(rundir.path))
    record = run_record(summary)
    assert (record.display_name, record.run_group, record.job_type) == ("summary", rundir.run_id, "summary")
    tables = list((summary / "files" / "media" / "table").glob("trials_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert [row[0] for row in table["data"]] == [t.id for t in trials]
    assert table["columns"][:3] == ["id", "kind", "of"]
    (log,) = summary.glob("run-*.wandb")
    history = [r.history for r in read_records(log) if r.WhichOneof("record_type") == "history"]
    steps = [int(h.step.num) for h in history]
    # wandb-core writes keys as nested_key paths (["metric"]), older writers as key.
    logged = [{i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in h.item} for h in history]
    measured = [t for t in trials if t.metric is not None]
    assert steps == [t.seq for t in measured]
    assert [row["metric"] for row in logged] == [t.metric for t in measured]
    best, expected = None, []
    for t in measured:  # progress.png's step line: the best kept value so far (score: max)
        if t.decision is Decision.KEEP and (best is None or t.metric > best):
            best = t.metric
        expected.append(best)
    assert [row.get("best") for row in logged] == expected and expected[0] is not None

    # Again, as the controller starts it at run end: the same run id replaces the previous files
    # rather than adding a second run beside them.
    assert spawn_summary(rundir.path).wait(timeout=180) == 0
    assert "W&B summary run:" in (rundir.path / "wandb-summary.log").read_text()
    (again,) = offline_runs(summary_dir(rundir.path))
    assert list(again.glob("files/media/table/trials_*.table.json"))
    # The table's staged artifact files wait for `ara sync` in the run, not under ~/.local/share.
    assert [f for f in (summary_dir(rundir.path) / "data").rglob("*") if f.is_file()]

    commands = sync_commands(rundir.path)
    assert len(commands) == 4  # three trials, then the summary
    assert all(c[1:4] == ["-m", "wandb", "sync"] for c in commands)
    assert commands[-1][-1] == str(offline_runs(summary_dir(rundir.path))[0])
    # `ara sync --dry-run`: one wandb sync per trial with runs, then the summary, nothing uploaded
    # and nothing written (issue 15: it refreshed the summary run).
    before = {p: p.stat().st_mtime_ns for p in rundir.path.rglob("*")}
    sync = subprocess.run(
        [sys.executable, "-m", "slurm_autoresearch.cli", "sync", str(rundir.path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert sync.returncode == 0, sync.stdout + sync.stderr
    oks = [line for line in sync.stdout.splitlines() if line.startswith("ok")]
    assert {p: p.stat().st_mtime_ns for p in rundir.path.rglob("*")} == before
    assert len(oks) == len([t for t in trials if offline_runs(rundir.trial_dir(t.id))]) + 1
