"""What only a real Slurm shows: Slurm's own time limit and memory limit, kills from outside,
re-attaching by job id, array chunking, sbatch options, a degraded watch, and whole runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from slurm_autoresearch.executors.slurm import SlurmExecutor
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.outcome import JobState
from slurm_autoresearch.trial import Decision
from slurm_autoresearch.views.status import status_document

from .conftest import commit_all, write_task
from .test_executor_contract import _drain, _outcome, _spec, slurm_params

pytestmark = pytest.mark.usefixtures("slurm_cluster")
SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


def _executor(tmp_path: Path, capacity: int = 2, gpus: int = 0, **extra: object) -> SlurmExecutor:
    return SlurmExecutor(
        capacity,
        tmp_path / "slurm",
        slurm_params(f"ara-test-{tmp_path.name}", gpus, **extra),
        poll_interval=0.3,
    )


def _sacct(job_id: str, fields: str = "JobID,State") -> str:
    return subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", fields, "-j", job_id.split("_")[0]],
        capture_output=True,
        text=True,
        check=True,
    ).stdout


def test_slurm_time_limit_is_a_timeout(tmp_path: Path) -> None:
    # The runner's own limit is far away; Slurm's one-minute limit (USR2 15 s before) ends it.
    ex = _executor(tmp_path, time=1)
    ex.submit([_spec(tmp_path, "T0001", "sleep 300", limit=600)])
    outcome = _outcome(_drain(ex, timeout=150)["T0001"])
    assert outcome.state is JobState.TIMEOUT, outcome
    assert "time limit" in outcome.reason, outcome
    assert 10 < outcome.elapsed < 100, outcome  # Slurm sends USR2 on its own schedule, before the limit


def test_memory_limit_is_out_of_memory(tmp_path: Path) -> None:
    hog = (
        'python -c "x = bytearray(1500 * 2**20); [x.__setitem__(i, 1) for i in range(0, len(x), 4096)]; '
        'import time; time.sleep(20)"'
    )
    ex = _executor(tmp_path, mem="300M")
    ex.submit([_spec(tmp_path, "T0001", hog)])
    outcome = _outcome(_drain(ex)["T0001"])
    assert outcome.state is JobState.OOM, outcome
    assert "memory" in outcome.reason


def test_scancel_from_outside_is_recorded_as_cancelled(tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    ids = ex.submit([_spec(tmp_path, "T0001", "sleep 300")])
    deadline = time.time() + 60
    while time.time() < deadline and not any(u.state == "running" for u in ex.poll()):
        time.sleep(0.2)
    subprocess.run(["scancel", ids["T0001"]], check=True)
    outcome = _outcome(_drain(ex)["T0001"])
    assert outcome.state is JobState.CANCELLED


def test_a_new_executor_reattaches_by_job_id(tmp_path: Path) -> None:
    first = _executor(tmp_path)
    spec = _spec(tmp_path, "T0001", "sleep 3; echo 4.5 > out.txt")
    job_id = first.submit([spec])["T0001"]
    second = _executor(tmp_path)  # a new controller process would build one from the ledger
    second.attach(spec, job_id)
    outcome = _outcome(_drain(second)["T0001"])
    assert outcome.state is JobState.COMPLETED and outcome.metric == 4.5
    assert outcome.node == "localhost" and outcome.elapsed >= 3


def test_arrays_are_chunked_at_the_cluster_limit(tmp_path: Path) -> None:
    ex = SlurmExecutor(
        4,
        tmp_path / "slurm",
        slurm_params(f"ara-test-{tmp_path.name}", 1),
        poll_interval=0.3,
        max_array_size=2,
    )
    ids = ex.submit([_spec(tmp_path, f"T000{i}", "echo 1 > out.txt", gpus=1) for i in range(1, 6)])
    arrays = {job_id.split("_")[0] for job_id in ids.values()}
    assert len(arrays) == 3  # 2 + 2 + 1
    seen = _drain(ex)
    assert all(_outcome(seen[t]).state is JobState.COMPLETED for t in ids)
    assert all(_outcome(seen[t]).gpu_seconds >= 0 for t in ids)
    script = next((tmp_path / "slurm").rglob("*_submission.sh")).read_text()
    assert "--wckey" not in script and "#SBATCH --gres=gpu:1" in script


def test_sbatch_refusals_are_retried_then_recorded(tmp_path: Path) -> None:
    ex = SlurmExecutor(
        1,
        tmp_path / "slurm",
        slurm_params("ara-test-bad", 0, partition="no-such-partition"),
        poll_interval=0.3,
        submit_retries=2,
    )
    ids = ex.submit([_spec(tmp_path, "T0001", "true")])
    assert ids == {"T0001": ""} and ex.live() == 1
    outcome = _outcome(_drain(ex, timeout=60)["T0001"])
    assert outcome.state is JobState.LOST
    assert "sbatch refused the job 2 times" in outcome.reason and "Invalid partition" in outcome.reason


def test_a_drained_partition_delays_submission_until_it_reopens(tmp_path: Path) -> None:
    subprocess.run(["scontrol", "update", "partitionname=debug", "state=drain"], check=True)
    try:
        ex = _executor(tmp_path)
        ids = ex.submit([_spec(tmp_path, "T0001", "echo 3 > out.txt")])
        assert ids == {"T0001": ""}  # refused for now: retried with backoff
        time.sleep(2)
    finally:
        subprocess.run(["scontrol", "update", "partitionname=debug", "state=up"], check=True)
    seen = _drain(ex, timeout=90)["T0001"]
    assert [u.state for u in seen if u.state in ("submitted", "finished")] == ["submitted", "finished"]
    assert _outcome(seen).state is JobState.COMPLETED and _outcome(seen).metric == 3


@pytest.mark.parametrize(
    ("slurm", "expected"),
    [
        ('partition = "no-such-partition"', "sbatch --test-only rejects these options: "),
        ('gres = "gpu:2"', "asks for a different GPU count"),
        ("time = 5", "must exceed [budget] trial_minutes"),
        ('time = "1h"', "is not minutes or [D-]HH:MM:SS"),
        ('mem = "lots"', "is not a size"),
    ],
)
def test_bad_slurm_options_fail_at_submit(toy_repo: Path, slurm: str, expected: str) -> None:
    from click.testing import CliRunner

    from slurm_autoresearch.cli import main

    path = write_task(toy_repo, f"\n[slurm]\n{slurm}\n")
    path.write_text(
        path.read_text()
        .replace('executor = "local"', 'executor = "slurm"')
        .replace("steps = 5", "steps = 5\ntrial_minutes = 10")
    )
    result = CliRunner().invoke(main, ["submit", str(path)])
    assert result.exit_code == 2, result.output
    assert expected in result.output and len(result.output.strip().splitlines()) == 1
    assert not (toy_repo / ".ara").exists()


def _slurm_task(
    repo: Path, extra: str = "", *, trials: int, parallel: int, gpus: int = 1, slurm: str = ""
) -> Path:
    path = write_task(
        repo,
        extra + f"\n[resources]\ngpus_per_trial = {gpus}\n[slurm]\npoll_seconds = 0.5\n{slurm}\n",
        trials=trials,
        parallel=parallel,
    )
    path.write_text(
        path.read_text()
        .replace('executor = "local"', 'executor = "slurm"')
        .replace("poll_seconds = 0.05", "poll_seconds = 0.5")
    )
    return path


def _overlap(ledger: Ledger) -> int:
    """Most trials whose jobs ran at the same moment (from the scheduler's start and end)."""
    spans = [
        (t.job_started_at, t.job_ended_at) for t in ledger.trials() if t.job_started_at and t.job_ended_at
    ]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_full_run_on_slurm_arrays(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\nsleep = 1.0\n")
    commit_all(toy_repo, "slower trials")
    task = load_task(
        _slurm_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n', trials=9, parallel=4)
    )
    assert task.executor == "slurm"
    controller = launch(task, echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    trials = ledger.trials()
    assert len(trials) == 9
    assert trials[1].title == "x to 2" and trials[1].decision is Decision.KEEP
    assert all(t.decision in (Decision.KEEP, Decision.DISCARD) for t in trials)
    assert all("_" in (t.job_id or "") for t in trials[1:4])  # first batch, beside the baseline: an array
    assert _overlap(ledger) <= 4
    assert all(t.node == "localhost" and (t.gpu_seconds or 0) > 0 for t in trials)
    doc = status_document(controller.rundir, ledger)
    assert doc["run"]["executor"] == "slurm" and doc["run"]["watch"] == "sacct"
    assert doc["budget"]["gpu_seconds"]["used"] == pytest.approx(
        sum(t.gpu_seconds or 0 for t in trials), abs=1
    )
    assert ledger.meta()["sacct_calls"] > 0
    ledger.close()


def test_a_job_end_is_decided_well_inside_a_sacct_poll(toy_repo: Path) -> None:
    """sacct is asked every 5 s; a job's outcome file brings the question forward."""
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\nsleep = 6.0\n")
    commit_all(toy_repo, "six-second trials")
    ideas = "".join(f'[[ideas]]\ntitle = "x to {x}"\nconfig = {{ x = {x} }}\n' for x in (1.0, 1.5, 2.0))
    path = _slurm_task(toy_repo, ideas, trials=4, parallel=2, gpus=0)
    text = path.read_text().replace("[slurm]\npoll_seconds = 0.5", "[slurm]\npoll_seconds = 5.0")
    path.write_text(text.replace("poll_seconds = 0.5\n", "poll_seconds = 2.0\n", 1))  # [run]: the default
    controller = launch(load_task(path), echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    trials = ledger.trials()  # maybe a combination of two keeps besides the four
    assert sum(t.kind.counts_against_budget() for t in trials) == 4
    assert all(t.decision is not None for t in trials)
    lags = [(t.decided_at or 0) - (t.job_ended_at or 0) for t in trials if t.job_ended_at]
    # The target is the run's poll (2 s) plus 2 s; the sacct poll alone would leave up to 5 s. Here
    # 0.4-0.8 s; under CI's load slurmdbd has reported a job's end as late as 2.8 s.
    assert max(lags) < 4.0, lags
    ledger.close()


def test_run_survives_outside_kills_and_failures(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text(
        "x = 0.5\ny = 2.0\nsleep = 0.0\ncrash = false\nhog_mb = 0\nhog_seconds = 0.0\n"
    )
    commit_all(toy_repo, "knobs")
    ideas = """
        [[ideas]]
        title = "killed from outside"
        config = { sleep = 300.0 }
        [[ideas]]
        title = "raises"
        config = { crash = true }
        [[ideas]]
        title = "too slow"
        config = { sleep = 30.0, x = 1.0 }
        [[ideas]]
        title = "over its memory"
        config = { hog_mb = 1500, hog_seconds = 5.0 }
        [[ideas]]
        title = "fine"
        config = { x = 2.0 }
    """
    path = _slurm_task(toy_repo, ideas, trials=6, parallel=4, gpus=0, slurm='mem = "400M"')
    path.write_text(path.read_text().replace("steps = 5", "steps = 5\ntrial_minutes = 0.1"))  # 6 s
    task = load_task(path)
    controller = None

    def sleep(seconds: float) -> None:
        assert controller is not None
        victim = controller.ledger.trial("T0002")
        if victim is not None and victim.state.value == "running" and victim.job_id:
            subprocess.run(["scancel", victim.job_id], check=False)
        time.sleep(seconds)

    controller = launch(task, echo=lambda _: None, sleep=sleep)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    by_title = {t.title: t for t in ledger.trials()}
    assert by_title["killed from outside"].job_state == "cancelled"
    assert by_title["raises"].job_state == "failed" and "boom from train.py" in by_title["raises"].reason
    assert by_title["too slow"].job_state == "timeout"
    assert by_title["over its memory"].job_state == "oom"
    assert by_title["fine"].decision is Decision.KEEP  # the run went on and kept an improvement
    assert ledger.meta()["state"] == "finished"
    ledger.close()


@pytest.fixture
def accounting_off() -> object:
    subprocess.run(["bash", str(SCRIPTS / "slurm"), "accounting-off"], check=True, capture_output=True)
    try:
        yield
    finally:
        subprocess.run(["bash", str(SCRIPTS / "slurm"), "accounting-on"], check=True, capture_output=True)


def test_run_finishes_with_sacct_down_and_says_it_is_degraded(toy_repo: Path, accounting_off: object) -> None:
    assert subprocess.run(["sacct", "-n", "-j", "1"], capture_output=True).returncode != 0
    task = load_task(_slurm_task(toy_repo, trials=3, parallel=2))
    controller = launch(task, echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    assert ledger.meta()["state"] == "finished"
    assert all(t.decision in (Decision.KEEP, Decision.DISCARD) for t in ledger.trials())
    doc = status_document(controller.rundir, ledger)
    assert doc["run"]["watch"].startswith("squeue (degraded: sacct failed")
    ledger.close()
    from click.testing import CliRunner

    from slurm_autoresearch.cli import main

    shown = CliRunner().invoke(main, ["status", str(controller.rundir.path)])
    assert "degraded" in shown.output
    assert json.loads(CliRunner().invoke(main, ["status", "--json", str(controller.rundir.path)]).output)


def test_slurm_verdicts_where_the_runner_could_not_write_one() -> None:
    from slurm_autoresearch.executors.sacct import SlurmRow
    from slurm_autoresearch.executors.slurm import _reconcile
    from slurm_autoresearch.outcome import Outcome

    lost = Outcome(state=JobState.LOST, reason="no outcome.json")
    killed = Outcome(state=JobState.CANCELLED, reason="cancelled (SIGTERM)")
    at_limit = SlurmRow("9_1", "FAILED", elapsed_s=3590, timelimit_s=3600)
    assert _reconcile(killed, JobState.TIMEOUT, SlurmRow("9_1", "TIMEOUT"), "").state is JobState.TIMEOUT
    assert _reconcile(lost, JobState.FAILED, at_limit, "").state is JobState.TIMEOUT
    assert (
        _reconcile(lost, JobState.FAILED, SlurmRow("9_1", "FAILED", elapsed_s=30, timelimit_s=3600), "").state
        is JobState.LOST
    )
    oom_log = "slurmstepd: error: StepId=9.0 exceeded memory limit (6 > 2), being killed"
    assert _reconcile(lost, JobState.FAILED, SlurmRow("9", "FAILED"), oom_log).state is JobState.OOM
    assert _reconcile(lost, JobState.NODE_FAIL, SlurmRow("9", "NODE_FAIL"), "").state is JobState.NODE_FAIL
    # scancel's SIGTERM reached the command before the runner: the runner saw a signal death
    signalled = Outcome(state=JobState.FAILED, exit_code=-15, reason="command killed by signal SIGTERM")
    cancelled = SlurmRow("9_1", "CANCELLED by 0")
    assert _reconcile(signalled, JobState.CANCELLED, cancelled, "").state is JobState.CANCELLED
    crashed = Outcome(state=JobState.FAILED, exit_code=1, reason="command exit code 1")
    assert _reconcile(crashed, JobState.CANCELLED, cancelled, "").state is JobState.FAILED
    done = Outcome(state=JobState.COMPLETED, metric=1.0)
    assert _reconcile(done, JobState.COMPLETED, SlurmRow("9", "COMPLETED"), "") == done


def _wait_state(ex: SlurmExecutor, trial: str, state: str, timeout: float = 60) -> list[Any]:
    seen: list[Any] = []
    deadline = time.time() + timeout
    while time.time() < deadline:
        seen += ex.poll()
        if any(u.trial_id == trial and u.state == state for u in seen):
            return seen
        time.sleep(0.2)
    raise AssertionError(f"{trial} never became {state}: {seen}")


def _requeue_once_started(ex: SlurmExecutor, spec: Any, job: str) -> float:
    """Requeue the job once its runner has started (Slurm says running before it has, under load)."""
    _wait_state(ex, spec.trial_id, "running")
    log = Path(spec.trial_dir) / "train.log"
    deadline = time.time() + 60
    while "[ara] trial T0001" not in (log.read_text() if log.exists() else ""):
        assert time.time() < deadline, "the job's runner never started"
        time.sleep(0.2)
    subprocess.run(["scontrol", "requeue", job], check=True)
    return time.time()


def test_a_requeued_job_runs_again_and_completes(tmp_path: Path) -> None:
    ex = _executor(tmp_path)
    # longer than a few sacct polls (5 s), so the job is seen running before it could end
    spec = _spec(tmp_path, "T0001", "sleep 12; echo 2 > out.txt")
    job = ex.submit([spec])["T0001"]
    requeued = _requeue_once_started(ex, spec, job)
    # Slurm holds a requeued job back for about two minutes (BeginTime); the executor lets it go.
    outcome = _outcome(_drain(ex, timeout=120)["T0001"])
    assert time.time() - requeued < 100, (
        "the requeued job idled its slot behind Slurm's BeginTime (about 2 min)"
    )
    assert outcome.state is JobState.COMPLETED and outcome.metric == 2
    assert (Path(spec.trial_dir) / "train.log").read_text().count("[ara] trial T0001") == 2


def test_a_requeued_job_is_released_again_when_slurm_puts_its_start_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Slurm sets the start time two minutes ahead when the old run finishes completing, which
    # undoes a release sent before then (seen in CI under load). The real scontrol, wrapped to
    # play that once: right after ara's first release it puts the start back as Slurm would.
    real, undone = shutil.which("scontrol"), tmp_path / "undone"
    wrapper = tmp_path / "bin" / "scontrol"
    wrapper.parent.mkdir()
    wrapper.write_text(
        f"""#!/bin/bash
"{real}" "$@"; rc=$?
if [[ "$1" == update && "$3" == starttime=now && ! -e "{undone}" ]]; then
  touch "{undone}"; "{real}" update "$2" starttime=now+120
fi
exit $rc
"""
    )
    wrapper.chmod(0o755)
    monkeypatch.setenv("PATH", f"{wrapper.parent}:{os.environ['PATH']}")
    ex = _executor(tmp_path)
    spec = _spec(tmp_path, "T0001", "sleep 12; echo 3 > out.txt")
    job = ex.submit([spec])["T0001"]
    requeued = _requeue_once_started(ex, spec, job)
    outcome = _outcome(_drain(ex, timeout=120)["T0001"])
    assert undone.exists(), "ara never released the requeued job"
    assert time.time() - requeued < 100, "ara did not release the job again after Slurm put it back"
    assert outcome.state is JobState.COMPLETED and outcome.metric == 3


def test_a_job_pending_too_long_is_ended_with_its_reason(tmp_path: Path) -> None:
    ex = SlurmExecutor(
        1,
        tmp_path / "slurm",
        slurm_params(f"ara-test-{tmp_path.name}", 0, additional_parameters={"hold": True}),
        poll_interval=0.3,
        max_pending_s=4.0,
    )
    ex.submit([_spec(tmp_path, "T0001", "true")])
    seen = _drain(ex, timeout=60)["T0001"]
    outcome = _outcome(seen)
    assert (
        outcome.state is JobState.LOST and "JobHeldUser" in outcome.reason and "pending for" in outcome.reason
    )


def _node(state: str) -> None:
    subprocess.run(
        ["scontrol", "update", "nodename=localhost", f"state={state}", "reason=ara-test"], check=False
    )


def test_node_failure_and_a_vanished_worktree_are_retried(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 0.0\n")
    commit_all(toy_repo, "sleep knob")
    ideas = """
        [[ideas]]
        title = "node dies under it"
        config = { sleep = 20.0, x = 1.0 }
        [[ideas]]
        title = "worktree vanishes"
        config = { x = 2.0 }
    """
    path = _slurm_task(
        toy_repo, ideas, trials=3, parallel=1, gpus=0, slurm="additional = { no-requeue = true }"
    )
    task = load_task(path)
    controller = None
    done = {"node": False, "worktree": False}

    def sleep(seconds: float) -> None:
        assert controller is not None
        first, second = controller.ledger.trial("T0002"), controller.ledger.trial("T0003")
        if first and first.state.value == "running" and not done["node"]:
            done["node"] = True
            _node("down")
            time.sleep(2)
            _node("resume")
        if second and second.job_id and second.state.value == "queued" and not done["worktree"]:
            done["worktree"] = True
            subprocess.run(["scontrol", "hold", second.job_id], check=False)
            shutil.rmtree(controller.ws.worktree_path("T0003"), ignore_errors=True)
            subprocess.run(["scontrol", "release", second.job_id], check=False)
        time.sleep(seconds)

    try:
        controller = launch(task, echo=lambda _: None, sleep=sleep)
        controller.run()
    finally:
        _node("resume")
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    node, gone = ledger.trial("T0002"), ledger.trial("T0003")
    assert done == {"node": True, "worktree": True}
    assert node is not None and node.attempts == 2 and node.job_state == "completed"
    assert gone is not None and gone.attempts == 2 and gone.job_state == "completed"
    retries = [e["detail"] for e in ledger.events() if e["kind"] == "retry"]
    assert any(d.startswith("node_fail") for d in retries) and any("worktree" in d for d in retries)
    ledger.close()


def test_the_controller_as_a_slurm_job_comes_back_by_itself(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 2.0\n")
    commit_all(toy_repo, "slower")
    path = _slurm_task(toy_repo, trials=5, parallel=1, gpus=0)
    path.write_text(path.read_text() + '\n[controller]\nwhere = "slurm"\nmem = "1G"\ntime = 30\n')
    ara = str(Path(sys.executable).parent / "ara")
    out = subprocess.run([ara, "submit", str(path)], cwd=toy_repo, capture_output=True, text=True, check=True)
    run_id = out.stdout.split("run id: ")[1].split()[0]
    job = out.stdout.split("controller: Slurm job ")[1].split()[0]
    rundir = toy_repo / ".ara" / "runs" / run_id
    deadline = time.time() + 90
    while time.time() < deadline and not (rundir / "trials" / "T0002").exists():
        time.sleep(0.5)
    assert (rundir / "trials" / "T0002").exists(), _sacct(job, "JobID,State,Reason")
    # Kill the controller inside its job: the job's loop starts it again, and it resumes.
    killed = subprocess.run(["pkill", "-9", "-f", f"resume {rundir}"], check=False).returncode
    assert killed == 0
    deadline = time.time() + 180
    state = ""
    while time.time() < deadline:
        res = subprocess.run([ara, "status", "--json", str(rundir)], capture_output=True, text=True)
        if res.returncode == 0:
            state = json.loads(res.stdout)["run"]["state"]
            if state == "finished":
                break
        time.sleep(1)
    assert state == "finished", (rundir / f"controller-job-{job}.out").read_text()[-2000:]
    ledger = Ledger.open(rundir / "ledger.sqlite", readonly=True)
    assert len(ledger.trials()) == 5 and all(t.state.value == "done" for t in ledger.trials())
    assert [e["kind"] for e in ledger.events()].count("run-resumed") >= 1
    ledger.close()
    time.sleep(2)
    assert _sacct(job).strip().endswith("COMPLETED")
