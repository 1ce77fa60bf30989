"""Slurm's words parsed from text: the state table, sacct/squeue/scontrol output, durations."""

from __future__ import annotations

from datetime import datetime

import pytest

from slurm_autoresearch.executors.sacct import (
    SLURM_STATES,
    duration_s,
    eligible_at,
    gpus_from_tres,
    job_state,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
)
from slurm_autoresearch.outcome import JobState
from slurm_autoresearch.spec import time_minutes

SACCT = """\
14_0|COMPLETED|localhost|2026-11-27T16:49:57|2026-11-27T16:50:13|00:00:16|billing=1,cpu=1,gres/gpu=1,mem=2000M,node=1|0:0|00:12:00
14_1|CANCELLED by 0|localhost|2026-11-27T16:49:57|2026-11-27T16:50:01|00:00:04|billing=1,cpu=1,gres/gpu=2,node=1|0:15|00:12:00
14_[2-4%2]|PENDING|None assigned|Unknown|Unknown|00:00:00||0:0|00:12:00
14_5.batch|COMPLETED|localhost|2026-11-27T16:49:57|2026-11-27T16:50:13|00:00:16|cpu=1|0:0|
15|OUT_OF_MEMORY|node7|2026-11-27T16:49:57|2026-11-27T16:50:13|1-00:00:10|gres/gpu:a100=4|0:125|1-00:00:00
"""


def test_every_state_the_issue_names_is_mapped() -> None:
    expected = {
        "COMPLETED": JobState.COMPLETED,
        "FAILED": JobState.FAILED,
        "CANCELLED": JobState.CANCELLED,
        "TIMEOUT": JobState.TIMEOUT,
        "OUT_OF_MEMORY": JobState.OOM,
        "NODE_FAIL": JobState.NODE_FAIL,
        "PREEMPTED": JobState.PREEMPTED,
        "BOOT_FAIL": JobState.NODE_FAIL,
        "DEADLINE": JobState.TIMEOUT,
        "REQUEUED": None,
        "PENDING": None,
        "RUNNING": None,
        "COMPLETING": None,
    }
    for raw, ours in expected.items():
        assert raw in SLURM_STATES
        assert job_state(raw) is ours
    assert job_state("CANCELLED by 1234") is JobState.CANCELLED
    assert job_state("NEVER_SEEN_BEFORE") is None  # unknown: alive until the watcher learns more


def test_sacct_rows() -> None:
    rows = parse_sacct(SACCT)
    assert sorted(rows) == ["14_0", "14_1", "14_2", "14_3", "14_4", "15"]
    done = rows["14_0"]
    assert done.ours is JobState.COMPLETED and done.node == "localhost"
    assert done.elapsed_s == 16 and done.gpus == 1 and done.gpu_seconds == 16 and done.timelimit_s == 720
    assert rows["14_1"].ours is JobState.CANCELLED and rows["14_1"].gpu_seconds == 8
    assert rows["14_3"].state == "PENDING" and rows["14_3"].node == ""
    assert rows["15"].ours is JobState.OOM and rows["15"].gpus == 4 and rows["15"].elapsed_s == 86410


def test_squeue_and_scontrol() -> None:
    rows = parse_squeue("20_0|RUNNING|localhost\n20_[1-2]|PENDING|\n21|COMPLETING|localhost\n")
    assert sorted(rows) == ["20_0", "20_1", "20_2", "21"]
    row = parse_scontrol(
        "JobId=31 ArrayJobId=30 ArrayTaskId=1 JobState=TIMEOUT Reason=TimeLimit "
        "RunTime=00:01:02 TimeLimit=00:01:00 NodeList=localhost"
    )
    assert row is not None and row.job_id == "30_1" and row.ours is JobState.TIMEOUT
    assert row.elapsed_s == 62 and row.timelimit_s == 60
    assert parse_scontrol("slurm_load_jobs error: Invalid job id specified") is None


def test_eligible_time_is_read_in_local_time() -> None:
    held = "JobId=5 JobState=PENDING Reason=BeginTime EligibleTime=2026-11-30T06:46:34 AccrueTime=Unknown"
    assert eligible_at(held) == datetime(2026, 11, 30, 6, 46, 34).timestamp()
    assert eligible_at("JobId=5 JobState=PENDING EligibleTime=Unknown") is None
    assert eligible_at("slurm_load_jobs error: Invalid job id specified") is None


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("30", 30), (90, 90), ("01:30:00", 90), ("00:45", 1), ("1-02", 1560), ("1-00:00:01", 1441)],
)
def test_time_values(text: str | int, minutes: int) -> None:
    assert time_minutes(text) == minutes


@pytest.mark.parametrize("bad", ["1h", "-3", "x:y", "", 0, -5])
def test_bad_time_values(bad: str | int) -> None:
    with pytest.raises(ValueError):
        time_minutes(bad)


def test_durations_and_tres() -> None:
    assert duration_s("UNLIMITED") is None and duration_s("") is None
    assert duration_s("2-03:04:05") == 2 * 86400 + 3 * 3600 + 4 * 60 + 5
    assert gpus_from_tres("billing=1,cpu=1,node=1") == 0
    assert gpus_from_tres("cpu=4,gres/gpu:a100=2,gres/gpu:v100=1") == 3
