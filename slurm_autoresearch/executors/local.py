"""Local executor: trial jobs as subprocesses on this machine, each in its own process group.

Each job's runner is recorded in `runner.pid` (pid, start time, GPUs) before anything else, so a
controller started later re-attaches to it by pid and start time, or knows it is gone.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jobenv import job_environ
from ..monitor import tail
from ..outcome import JobState, Outcome
from ..rundir import LOG_FILE, OUTCOME_FILE, process_start, write_json
from .base import JobSpec, JobUpdate
from .runner import signal_group

# The runner enforces the time limit itself and writes a timeout outcome; this is the backstop.
_HARD_KILL_GRACE_S = 30.0
PID_FILE = "runner.pid"


@dataclass
class _Job:
    spec: JobSpec
    pid: int
    start: str | None
    gpus: tuple[int, ...]
    started: float
    proc: subprocess.Popen[bytes] | None = None  # None: a job another controller started
    cancelled: bool = False
    killed: str = ""

    def exit_code(self) -> int | None:
        """None while it runs."""
        if self.proc is not None:
            return self.proc.poll()
        return None if process_start(self.pid) == self.start else -1


@dataclass
class LocalExecutor:
    """At most `capacity` jobs at once; GPUs are handed out as CUDA_VISIBLE_DEVICES slices."""

    capacity: int
    gpus_per_job: int = 0
    gpu_ids: list[int] = field(default_factory=list)
    python: str = sys.executable
    name: str = "local"
    watch: str = "processes"
    _queue: deque[JobSpec] = field(default_factory=deque)
    _running: dict[str, _Job] = field(default_factory=dict)
    _pending_updates: list[JobUpdate] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.gpus_per_job and len(self.gpu_ids) < self.gpus_per_job * self.capacity:
            raise ValueError(
                f"{self.capacity} slots x {self.gpus_per_job} GPUs need {self.gpus_per_job * self.capacity} "
                f"GPU ids, got {self.gpu_ids}"
            )

    def submit(self, jobs: list[JobSpec]) -> dict[str, str]:
        ids = {}
        for spec in jobs:
            self._queue.append(spec)
            ids[spec.trial_id] = f"local-{spec.trial_id}"
        self._start_ready()
        # Report the real pid once a job has started; queued jobs keep their placeholder id.
        return {tid: self._job_id(tid) or jid for tid, jid in ids.items()}

    def _job_id(self, trial_id: str) -> str | None:
        job = self._running.get(trial_id)
        return f"pid:{job.pid}" if job else None

    def _free_gpus(self) -> list[int]:
        used = {g for job in self._running.values() for g in job.gpus}
        return [g for g in self.gpu_ids if g not in used]

    def _start_ready(self) -> None:
        while self._queue and len(self._running) < self.capacity:
            spec = self._queue.popleft()
            gpus = tuple(self._free_gpus()[: self.gpus_per_job])
            # The runner starts from the allowlist too: its /proc/<pid>/environ is readable by
            # training code that has no sandbox.
            env = job_environ(os.environ, spec.pass_env)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, gpus))
            trial_dir = Path(spec.trial_dir)
            with (trial_dir / "runner.log").open("ab") as err:
                proc = subprocess.Popen(
                    [self.python, "-m", "slurm_autoresearch.executors.runner", str(trial_dir)],
                    env=env,
                    stdout=err,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,  # survives the controller: a resumed one re-attaches
                )
            start = process_start(proc.pid)
            write_json(trial_dir / PID_FILE, {"pid": proc.pid, "start": start, "gpus": list(gpus)})
            self._running[spec.trial_id] = _Job(spec, proc.pid, start, gpus, time.monotonic(), proc)
            self._pending_updates.append(JobUpdate(spec.trial_id, f"pid:{proc.pid}", "running"))

    def attach(self, spec: JobSpec, job_id: str) -> None:
        """Re-attach by the runner.pid record; a runner that is gone is reported finished."""
        record = _read_pid_file(Path(spec.trial_dir))
        if record and process_start(record["pid"]) == record["start"]:
            job = _Job(spec, record["pid"], record["start"], tuple(record.get("gpus", [])), time.monotonic())
            self._running[spec.trial_id] = job
            self._pending_updates.append(JobUpdate(spec.trial_id, f"pid:{job.pid}", "running"))
            return
        outcome = Outcome.read(
            Path(spec.trial_dir) / OUTCOME_FILE,
            missing_state=JobState.LOST,
            missing_reason=f"the job's process ended while no controller watched it, without {OUTCOME_FILE}",
            log_tail=tail(Path(spec.trial_dir) / LOG_FILE),
        )
        self._pending_updates.append(JobUpdate(spec.trial_id, job_id, "finished", outcome))

    def find(self, specs: list[JobSpec]) -> dict[str, str]:
        """Trials whose runner did start (a runner.pid exists): the controller died before recording it."""
        found = {}
        for spec in specs:
            record = _read_pid_file(Path(spec.trial_dir))
            if record:
                found[spec.trial_id] = f"pid:{record['pid']}"
        return found

    def poll(self) -> list[JobUpdate]:
        updates, self._pending_updates = self._pending_updates, []
        for tid, job in list(self._running.items()):
            code = job.exit_code()
            if code is None:
                if time.monotonic() - job.started > job.spec.time_limit_s + _HARD_KILL_GRACE_S:
                    job.killed = "timeout"
                    signal_group(job.pid, signal.SIGKILL)
                continue
            del self._running[tid]
            updates.append(JobUpdate(tid, f"pid:{job.pid}", "finished", self._outcome(job, code)))
        self._start_ready()
        updates.extend(self._pending_updates)
        self._pending_updates = []
        return updates

    def _outcome(self, job: _Job, code: int) -> Outcome:
        trial_dir = Path(job.spec.trial_dir)
        log_tail = tail(trial_dir / LOG_FILE)
        if job.killed == "timeout":
            state, reason = JobState.TIMEOUT, "killed after the wall-clock limit (runner did not stop it)"
        elif job.cancelled:
            state, reason = JobState.CANCELLED, "cancelled"
        else:
            state = JobState.LOST
            reason = f"runner exited with code {code} without writing {OUTCOME_FILE}; see runner.log"
        return Outcome.read(
            trial_dir / OUTCOME_FILE, missing_state=state, missing_reason=reason, log_tail=log_tail
        )

    def ending(self) -> bool:
        """Whether a job has ended since the last poll (a non-blocking wait per job)."""
        return any(job.exit_code() is not None for job in self._running.values())

    def cancel(self, trial_id: str) -> None:
        for spec in list(self._queue):
            if spec.trial_id == trial_id:
                self._queue.remove(spec)
                outcome = Outcome(state=JobState.CANCELLED, reason="cancelled before it started")
                self._pending_updates.append(JobUpdate(trial_id, f"local-{trial_id}", "finished", outcome))
                return
        job = self._running.get(trial_id)
        if job and job.exit_code() is None:
            job.cancelled = True
            # The runner forwards SIGTERM to the training command and writes a cancelled outcome.
            os.kill(job.pid, signal.SIGTERM)

    def live(self) -> int:
        return len(self._queue) + len(self._running)

    def close(self) -> None:
        """Running jobs go on in their own sessions; a resumed controller re-attaches to them."""
        self._queue.clear()
        self._running.clear()


def _read_pid_file(trial_dir: Path) -> dict[str, Any] | None:
    """runner.pid as written by `_start_ready`, or None; only its pid is checked (an int), the rest is
    JSON as read."""
    try:
        record = json.loads((trial_dir / PID_FILE).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("pid"), int) else None
