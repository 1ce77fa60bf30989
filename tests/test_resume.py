"""Crash consistency: a controller killed with SIGKILL at random moments, resumed each time."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_autoresearch.executors.local import LocalExecutor
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.trial import Decision, TrialState

from .conftest import commit_all, git, repo_state, write_task

ARA = [sys.executable, "-m", "slurm_autoresearch.cli"]


def test_sigkill_at_random_moments_loses_and_repeats_nothing(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\nsleep = 0.3\n")
    commit_all(toy_repo, "slower")
    path = write_task(toy_repo, trials=10, parallel=2)
    before = repo_state(toy_repo)
    rng = random.Random(3)
    run_id, kills = "", 0
    while kills < 6:
        cmd = [*ARA, "resume", run_id] if run_id else [*ARA, "submit", str(path)]
        proc = subprocess.Popen(
            cmd, cwd=toy_repo, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        while not run_id:  # the run exists once its id is printed; kills start from there
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "ara submit ended before printing the run id"
            if line.startswith("run id: "):
                run_id = line.split()[-1]
        time.sleep(rng.uniform(0.3, 2.5))
        if proc.poll() is not None:
            break
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        kills += 1
    # a git killed with the controller can leave a ref lock that would block moving the best branch
    lock = toy_repo / ".git" / "refs" / "heads" / "ara" / run_id / "best.lock"
    ledger = Ledger.open(toy_repo / ".ara" / "runs" / run_id / "ledger.sqlite", readonly=True)
    unfinished = ledger.meta()["state"] != "finished"  # (a kill can come just after the end)
    ledger.close()
    if unfinished:
        lock.write_text("")
    final = subprocess.run([*ARA, "resume", run_id], cwd=toy_repo, capture_output=True, text=True)
    assert final.returncode == 0, final.stdout + final.stderr
    assert kills >= 3
    rundir = toy_repo / ".ara" / "runs" / run_id
    assert not unfinished or "removed 1 stale git lock files: refs/heads/ara/" in final.stdout
    assert not lock.exists()
    ledger = Ledger.open(rundir / "ledger.sqlite", readonly=True)
    trials = ledger.trials()
    assert ledger.meta()["state"] == "finished"
    ledger.close()
    assert sum(1 for t in trials if t.kind.counts_against_budget()) == 10  # (+ combinations)
    assert all(t.state is TrialState.DONE and t.decision for t in trials)
    # No job ran twice: the runner notes each start in the log. (A submission the controller made
    # but died before the local executor started it is submitted again: attempts may be 2.)
    starts = {
        t.id: (rundir / "trials" / t.id / "train.log").read_text().count(f"[ara] trial {t.id} in")
        for t in trials
        if t.job_id  # a combination git could not merge is rejected before any job
    }
    assert set(starts.values()) == {1}, starts
    assert all((rundir / "trials" / t.id / "runner.pid").exists() for t in trials if t.job_id)
    kept = sorted((t for t in trials if t.decision is Decision.KEEP), key=lambda t: t.decided_at or 0)
    assert git(toy_repo, "rev-parse", f"ara/{run_id}/best").strip() == kept[-1].commit
    assert not [p for p in (rundir / "worktrees").glob("T*")]  # cleaned up
    assert repo_state(toy_repo)[:3] == before[:3]


class _BrokenOnce(LocalExecutor):
    """An executor whose third poll fails as a full disk would: a failure of ara's own machinery."""

    polls = 0

    def poll(self):  # type: ignore[no-untyped-def]
        type(self).polls += 1
        if type(self).polls == 3:
            raise OSError(28, "No space left on device")
        return super().poll()


def test_a_run_that_failed_of_its_own_machinery_says_why_and_resumes(toy_repo: Path) -> None:
    from slurm_autoresearch.loop.launcher import launch, open_run, resumable
    from slurm_autoresearch.loop.preflight import load_task

    path = write_task(toy_repo, trials=3, parallel=1)
    controller = launch(load_task(path), executor=_BrokenOnce(capacity=1), echo=lambda _: None)
    with pytest.raises(OSError):
        controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    meta = ledger.meta()
    ledger.close()
    assert meta["state"] == "failed" and "No space left on device" in meta["end_reason"]
    assert resumable(controller.rundir) == ""
    summary = open_run(controller.rundir, echo=lambda _: None).run()
    assert summary.state == "finished", summary.reason
