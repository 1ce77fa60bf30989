"""The job side's parsing and environment rules."""

from __future__ import annotations

from pathlib import Path

from slurm_autoresearch.executors.base import JobSpec
from slurm_autoresearch.executors.runner import trial_env
from slurm_autoresearch.metrics import parse_metrics_block, read_metrics
from slurm_autoresearch.monitor import diagnose, tail


def test_metrics_block_takes_the_last_block() -> None:
    text = "---\nscore: 1\n...training...\n---\nscore: 0.75\nmemory_gb: 3.5\nnot a metric line\nname: abc\n"
    assert parse_metrics_block(text) == {"score": 0.75, "memory_gb": 3.5}
    assert parse_metrics_block("no block here\nscore: 1\n") == {}


def test_metrics_json_wins_over_the_block(tmp_path: Path) -> None:
    path = tmp_path / "metrics.json"
    path.write_text('{"score": 0.5, "name": "x", "flag": true}')
    assert read_metrics(path, "---\nscore: 9\n") == {"score": 0.5}
    assert read_metrics(tmp_path / "absent.json", "---\nscore: 9\n") == {"score": 9.0}


def _spec(tmp_path: Path, **fields: object) -> JobSpec:
    base = dict(
        trial_id="T0003",
        run_id="r",
        run_dir="/runs/r",
        trial_dir=str(tmp_path),
        worktree="/w",
        workdir=".",
        command="true",
        eval=None,
        metric="m",
        steps=11,
        time_limit_s=5,
        gpus=0,
        frozen={},
        project="p",
    )
    return JobSpec(**{**base, **fields})  # type: ignore[arg-type]


def test_trial_env_strips_secrets_even_from_the_task(tmp_path: Path) -> None:
    spec = _spec(tmp_path, env={"ANTHROPIC_API_KEY": "x", "ARA_STEPS": "999", "FOO": "1"})
    env = trial_env(spec, {"ANTHROPIC_AUTH_TOKEN": "t", "PATH": "/bin", "ARA_TRIAL_ID": "stale"})
    assert not [k for k in env if k.startswith("ANTHROPIC_")]
    assert env["ARA_STEPS"] == "11" and env["ARA_TRIAL_ID"] == "T0003" and env["FOO"] == "1"


def test_rules_name_what_went_wrong(tmp_path: Path) -> None:
    assert diagnose("step 10 loss nan\n") == "loss is NaN or inf"
    assert diagnose("RuntimeError: CUDA out of memory. Tried to allocate") == "out of memory"
    tb = "Traceback (most recent call last):\n  File \"x.py\", line 1\nKeyError: 'lr'\n"
    assert diagnose(tb) == "traceback: KeyError: 'lr'"
    assert diagnose("all good\n") is None
    log = tmp_path / "log"
    log.write_text("x" * 10000 + "\nlast line\n")
    assert tail(log, 100).endswith("last line\n")
    assert len(tail(log, 100)) <= 100


def test_thread_pools_are_capped_to_the_trials_cpus(tmp_path: Path) -> None:
    """Two trials on two cores each starting a pool per core fought over the CPUs (issue 15)."""
    spec = _spec(tmp_path, cpus=2, env={"MKL_NUM_THREADS": "4"})
    env = trial_env(spec, {"PATH": "/bin", "OMP_NUM_THREADS": "64"})
    assert env["OMP_NUM_THREADS"] == "2" and env["OPENBLAS_NUM_THREADS"] == "2"  # the node's 64 is not ours
    assert env["MKL_NUM_THREADS"] == "4"  # the task's own setting wins
