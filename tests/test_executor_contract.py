"""One contract suite for every executor: the local one now, Slurm's through the same tests."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from slurm_autoresearch.executors import Executor, JobSpec, JobUpdate
from slurm_autoresearch.executors.local import LocalExecutor
from slurm_autoresearch.executors.slurm import SlurmExecutor
from slurm_autoresearch.outcome import JobState, Outcome

Factory = Callable[[int, int, list[int]], Executor]


def slurm_params(job_name: str, gpus: int, **extra: object) -> dict[str, object]:
    """Options for the test cluster (scripts/slurm): short limits, no wckey, GPUs as gres."""
    params: dict[str, object] = {
        "job_name": job_name,
        "time": 5,
        "signal_delay_s": 15,
        "wckey": None,
        "cpus_per_task": 1,
        "use_srun": True,
    }
    if gpus:
        params["gres"] = f"gpu:{gpus}"
    return {**params, **extra}


def _local(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    return lambda capacity, gpus, ids: LocalExecutor(capacity=capacity, gpus_per_job=gpus, gpu_ids=ids)


def _slurm(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    request.getfixturevalue("slurm_cluster")
    name = f"ara-test-{tmp_path.name}"
    # The cluster hands out its own GPUs; the local ids list does not apply.
    return lambda capacity, gpus, ids: SlurmExecutor(
        capacity, tmp_path / "slurm", slurm_params(name, gpus), poll_interval=0.3
    )


EXECUTORS = {"local": _local, "slurm": _slurm}

EVAL = (
    "python -c \"import json,os; json.dump({'score': float(open('out.txt').read())}, "
    "open(os.environ['ARA_METRICS_PATH'],'w'))\""
)


@pytest.fixture(params=sorted(EXECUTORS))
def make_executor(request: pytest.FixtureRequest, tmp_path: Path) -> Factory:
    return EXECUTORS[request.param](request, tmp_path)


def _spec(
    tmp_path: Path,
    tid: str,
    command: str,
    *,
    eval_cmd: str | None = EVAL,
    limit: float = 60,
    gpus: int = 0,
    frozen: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
) -> JobSpec:
    wt = tmp_path / "wt" / tid
    wt.mkdir(parents=True)
    for name, text in (files or {}).items():
        (wt / name).write_text(text)
    tdir = tmp_path / "trials" / tid
    tdir.mkdir(parents=True)
    spec = JobSpec(
        trial_id=tid,
        run_id="run1",
        run_dir=str(tmp_path),
        trial_dir=str(tdir),
        worktree=str(wt),
        workdir=".",
        command=command,
        eval=eval_cmd,
        metric="score",
        steps=7,
        time_limit_s=limit,
        gpus=gpus,
        frozen=frozen or {},
        project="toy",
    )
    (tdir / "job.json").write_text(json.dumps(spec.to_dict()))
    return spec


def _drain(executor: Executor, timeout: float = 120) -> dict[str, list[JobUpdate]]:
    seen: dict[str, list[JobUpdate]] = {}
    deadline = time.time() + timeout
    while executor.live() and time.time() < deadline:
        for update in executor.poll():
            seen.setdefault(update.trial_id, []).append(update)
        time.sleep(0.05)
    for update in executor.poll():
        seen.setdefault(update.trial_id, []).append(update)
    assert executor.live() == 0, "jobs did not finish in time"
    return seen


def _outcome(updates: list[JobUpdate]) -> Outcome:
    finished = [u for u in updates if u.state == "finished"]
    assert len(finished) == 1
    assert finished[0].outcome is not None
    return finished[0].outcome


def test_completed_job_reports_metric_and_environment(
    make_executor: Factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-secret")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
    command = "env | sort > env.txt; echo 2.5 > out.txt; echo step 7 loss 0.1"
    ex = make_executor(1, 0, [])
    spec = _spec(tmp_path, "T0001", command)
    ids = ex.submit([spec])
    assert set(ids) == {"T0001"}
    outcome = _outcome(_drain(ex)["T0001"])
    assert outcome.state is JobState.COMPLETED
    assert outcome.metric == 2.5
    assert outcome.elapsed > 0
    env = dict(
        line.split("=", 1)
        for line in (Path(spec.worktree) / "env.txt").read_text().splitlines()
        if "=" in line
    )
    assert not [k for k in env if k.startswith("ANTHROPIC_")]
    assert env["ARA_TRIAL_ID"] == "T0001"
    assert env["ARA_STEPS"] == "7"
    assert env["ARA_RUN_DIR"] == str(tmp_path)
    assert env["ARA_SEED"] == "0"
    # with a frozen evaluation only the evaluation gets a metrics path: training cannot write one
    assert "ARA_METRICS_PATH" not in env
    assert env["WANDB_MODE"] == "offline" and env["WANDB_RUN_GROUP"] == "run1"
    assert env["CUDA_VISIBLE_DEVICES"] == ""
    log = (Path(spec.trial_dir) / "train.log").read_text()
    assert "step 7 loss 0.1" in log
    saved = json.loads((Path(spec.trial_dir) / "outcome.json").read_text())
    assert saved["state"] == "completed" and saved["metric"] == 2.5
    ex.close()


def test_at_most_capacity_jobs_at_once(make_executor: Factory, tmp_path: Path) -> None:
    stamps = tmp_path / "stamps"
    stamps.mkdir()
    command = (
        f'python -c "import time; print(time.time())" > {stamps}/$ARA_TRIAL_ID.start; sleep 0.6; '
        f'python -c "import time; print(time.time())" > {stamps}/$ARA_TRIAL_ID.end; echo 1 > out.txt'
    )
    ex = make_executor(2, 0, [])
    ex.submit([_spec(tmp_path, f"T000{i}", command) for i in range(1, 6)])
    assert ex.live() == 5
    seen = _drain(ex)
    assert all(_outcome(seen[f"T000{i}"]).state is JobState.COMPLETED for i in range(1, 6))
    spans = [
        (float((stamps / f"T000{i}.start").read_text()), float((stamps / f"T000{i}.end").read_text()))
        for i in range(1, 6)
    ]
    for start, _ in spans:
        overlapping = sum(1 for s, e in spans if s <= start < e)
        assert overlapping <= 2
    ex.close()


def test_gpu_slices_are_disjoint(make_executor: Factory, tmp_path: Path) -> None:
    command = "echo $CUDA_VISIBLE_DEVICES > gpus.txt; sleep 0.5; echo 1 > out.txt"
    ex = make_executor(2, 2, [0, 1, 2, 3])
    specs = [_spec(tmp_path, f"T000{i}", command, gpus=2) for i in (1, 2)]
    ex.submit(specs)
    seen = _drain(ex)
    slices = [set((Path(s.worktree) / "gpus.txt").read_text().strip().split(",")) for s in specs]
    assert all(len(s) == 2 for s in slices)
    assert not slices[0] & slices[1]
    outcome = _outcome(seen["T0001"])
    assert outcome.gpu_seconds == pytest.approx(outcome.elapsed * 2, rel=0.01)
    ex.close()


def test_failed_command_is_an_outcome_with_the_reason(make_executor: Factory, tmp_path: Path) -> None:
    ex = make_executor(1, 0, [])
    ex.submit([_spec(tmp_path, "T0001", "python -c \"raise ValueError('bad config value')\"")])
    outcome = _outcome(_drain(ex)["T0001"])
    assert outcome.state is JobState.FAILED
    assert outcome.exit_code == 1
    assert "ValueError: bad config value" in outcome.reason
    assert "Traceback" in outcome.log_tail
    ex.close()


def test_time_limit_gives_timeout(make_executor: Factory, tmp_path: Path) -> None:
    ex = make_executor(1, 0, [])
    ex.submit([_spec(tmp_path, "T0001", "sleep 30", limit=1.0)])
    start = time.time()
    outcome = _outcome(_drain(ex)["T0001"])
    assert outcome.state is JobState.TIMEOUT
    assert time.time() - start < 15
    ex.close()


def test_cancel_running_and_queued_jobs(make_executor: Factory, tmp_path: Path) -> None:
    ex = make_executor(1, 0, [])
    ex.submit([_spec(tmp_path, "T0001", "sleep 30"), _spec(tmp_path, "T0002", "sleep 30")])
    deadline = time.time() + 10
    started = False
    while not started and time.time() < deadline:
        started = any(u.state == "running" and u.trial_id == "T0001" for u in ex.poll())
        time.sleep(0.05)
    time.sleep(0.3)
    ex.cancel("T0002")
    ex.cancel("T0001")
    seen = _drain(ex, timeout=20)
    assert _outcome(seen["T0001"]).state is JobState.CANCELLED
    assert _outcome(seen["T0002"]).state is JobState.CANCELLED
    ex.close()


def test_frozen_file_changed_during_the_job(make_executor: Factory, tmp_path: Path) -> None:
    original = "print('---'); print('score: 1')\n"
    frozen = {"evaluate.py": hashlib.sha256(original.encode()).hexdigest()}
    ex = make_executor(1, 0, [])
    spec = _spec(
        tmp_path,
        "T0001",
        "echo \"print('---'); print('score: 99')\" > evaluate.py",
        eval_cmd="python evaluate.py",
        frozen=frozen,
        files={"evaluate.py": original},
    )
    ex.submit([spec])
    outcome = _outcome(_drain(ex)["T0001"])
    assert outcome.state is JobState.TAMPERED
    assert outcome.frozen_changed == ["evaluate.py"]
    assert outcome.metric is None
    assert "frozen files changed during the command: evaluate.py" in outcome.reason
    ex.close()


def test_metric_comes_from_the_evaluation_not_the_training(make_executor: Factory, tmp_path: Path) -> None:
    # Training writes a flattering metrics file and block; the frozen evaluation has the last word.
    command = (
        'python -c "import json,os; '
        "json.dump({'score': 1000.0}, open(os.environ['ARA_METRICS_PATH'],'w'))\";"
        " echo ---; echo 'score: 1000'"
    )
    ex = make_executor(1, 0, [])
    ex.submit([_spec(tmp_path, "T0001", command, eval_cmd="echo ---; echo 'score: 0.25'")])
    outcome = _outcome(_drain(ex)["T0001"])
    assert outcome.state is JobState.COMPLETED
    assert outcome.metric == 0.25
    ex.close()


def test_no_metric_is_reported_as_such(make_executor: Factory, tmp_path: Path) -> None:
    ex = make_executor(1, 0, [])
    ex.submit([_spec(tmp_path, "T0001", "echo training", eval_cmd="echo 'accuracy: 0.5'")])
    outcome = _outcome(_drain(ex)["T0001"])
    assert outcome.metric is None
    assert "no finite metric 'score'" in outcome.reason
    ex.close()
