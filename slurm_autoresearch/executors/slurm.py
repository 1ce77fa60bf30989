"""Slurm executor: trial batches as job arrays through submitit, watched with one sacct call per poll.

Over 400 lines: SlurmExecutor is one state machine over the table of live jobs (submission in
arrays with retries, finding jobs after a restart, polling, pending reasons, held-back requeues,
the outcome corrected by Slurm's verdict), and its methods share that table. The sbatch options
are apart in sbatch.py, the parsing of Slurm's output in sacct.py.

submitit builds and submits the arrays; watching is ara's own (submitit's watcher backs off to
ten minutes and loops forever on a job sacct never saw). Where sacct fails, squeue and
`scontrol show job` take over and `watch` says so; a job that vanished is recorded as lost.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ..jobenv import exported, job_environ
from ..monitor import diagnose, tail
from ..outcome import JobState, Outcome
from ..rundir import LOG_FILE, OUTCOME_FILE
from .base import JobSpec, JobUpdate
from .runner import run_trial
from .sacct import (
    SACCT_FIELDS,
    SQUEUE_FORMAT,
    SlurmRow,
    eligible_at,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
)

_SACCT_RETRY_POLLS = 10  # while degraded, try sacct again every this many polls
# A job whose runner has written its outcome is ending: sacct is asked again this soon (at most
# this many times per job) instead of at the next poll, so its slot is refilled seconds earlier.
_ENDING_SPACING_S = 0.5
_ENDING_QUERIES = 6
# A requeued job still pending this long after ara released it (or found it free to start) is
# looked at again: Slurm resets the start time when the old run finishes completing, so a release
# sent while it was still completing is lost and is sent again (at most _MAX_RELEASES times, then
# the job is cancelled and submitted again).
_RELEASE_CHECK_S = 3.0
_MAX_RELEASES = 5


@dataclass
class _Job:
    spec: JobSpec
    job_id: str
    submitted: float
    running: bool = False
    cancelled: bool = False
    reason: str = ""  # the last pending reason reported
    requeued: float = 0.0  # when it was first seen pending again after running (a requeue)
    released: float = 0.0  # when ara last asked Slurm to start the held-back job now (or checked)
    release_refused: bool = False  # and Slurm said no (then it is cancelled and submitted again)
    releases: int = 0  # how many times it asked (Slurm may undo one, see _RELEASE_CHECK_S)
    early_queries: int = 0  # sacct asked out of turn because its outcome file is there


def _last_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[-1] if text else type(exc).__name__


def _run(cmd: list[str], timeout: float = 60) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        raise RuntimeError(lines[-1].strip() if lines else f"{cmd[0]} exited {proc.returncode}")
    return proc.stdout


class SlurmExecutor:
    """Jobs are array tasks; `capacity` caps the run's live jobs and each array's parallelism."""

    name = "slurm"

    def __init__(
        self,
        capacity: int,
        folder: Path,
        params: dict[str, Any],
        *,
        python: str | None = None,
        poll_interval: float = 2.0,
        grace_s: float = 60.0,
        max_array_size: int | None = None,
        max_pending_s: float | None = None,
        submit_retries: int = 6,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.capacity = capacity
        self.folder = folder
        self.params = {**params, "array_parallelism": capacity}
        self.python = python
        self.poll_interval = poll_interval
        self.grace_s = grace_s
        self.clock = clock
        self.watch = "sacct"
        self.sacct_calls = 0
        self.squeue_calls = 0
        self._live: dict[str, _Job] = {}
        self._pending: list[JobUpdate] = []
        self._last_query = -math.inf
        self._polls_degraded = 0
        self._max_array = max_array_size  # None: ask the cluster (scontrol show config)
        self.max_pending_s = max_pending_s
        self.submit_retries = submit_retries
        self._unsubmitted: list[tuple[JobSpec, int, float, str]] = []  # spec, attempts, due, last error

    # -- submitting ---------------------------------------------------------------------------
    def _max_array_size(self) -> int:
        if self._max_array is None:
            try:
                out = _run(["scontrol", "show", "config"])
                value = next(ln.split("=", 1)[1] for ln in out.splitlines() if ln.startswith("MaxArraySize"))
                self._max_array = max(1, int(value.strip()))
            except (RuntimeError, StopIteration, ValueError, OSError, subprocess.TimeoutExpired):
                self._max_array = 1001  # Slurm's default
        return self._max_array

    def submit(self, jobs: list[JobSpec]) -> dict[str, str]:
        """One job array per batch (chunked at MaxArraySize). A refused sbatch (QOS limits,
        MaxSubmitJobs, socket timeouts) is retried with backoff: such jobs get an empty id now and
        a `submitted` update later, or a lost outcome after `submit_retries` refusals."""
        ids: dict[str, str] = {}
        size = self._max_array_size()
        for start in range(0, len(jobs), size):
            chunk = jobs[start : start + size]
            try:
                ids.update(self._sbatch(chunk))
            except Exception as exc:  # submitit raises FailedJobError/RuntimeError with sbatch's stderr
                error = _last_line(exc)
                for spec in chunk:
                    ids[spec.trial_id] = ""
                    self._unsubmitted.append((spec, 1, self.clock() + 10.0, error))
        return ids

    def _sbatch(self, chunk: list[JobSpec]) -> dict[str, str]:
        import submitit

        executor = submitit.SlurmExecutor(folder=self.folder / "%j", python=self.python)
        # The comment names the trials in array order: a controller that died before recording the
        # ids finds them again with squeue (or sacct, where job comments are stored).
        executor.update_parameters(**self.params, comment="ara:" + ",".join(s.trial_id for s in chunk))
        # sbatch exports its own environment into the job: the allowlist and the names the task
        # passes, never the login shell's secrets. A controller that is itself a Slurm job must
        # not hand its SLURM_* settings to the trials either.
        names = sorted({name for spec in chunk for name in spec.pass_env})
        with exported(job_environ(os.environ, names)), submitit.helpers.clean_env():
            handles = executor.map_array(run_trial, [spec.trial_dir for spec in chunk])
        now = self.clock()
        for spec, handle in zip(chunk, handles, strict=True):
            self._live[spec.trial_id] = _Job(spec, handle.job_id, now)
        return {spec.trial_id: handle.job_id for spec, handle in zip(chunk, handles, strict=True)}

    def _retry_submissions(self) -> list[JobUpdate]:
        updates: list[JobUpdate] = []
        now = self.clock()
        due = [item for item in self._unsubmitted if item[2] <= now]
        waiting = [item for item in self._unsubmitted if item[2] > now]
        self._unsubmitted = waiting
        if not due:
            return updates
        try:
            ids = self._sbatch([spec for spec, *_ in due])
            return [JobUpdate(tid, job_id, "submitted") for tid, job_id in ids.items()]
        except Exception as exc:
            error = _last_line(exc)
        for spec, attempts, _, _ in due:
            if attempts >= self.submit_retries:
                reason = f"sbatch refused the job {attempts} times: {error}"
                updates.append(
                    JobUpdate(spec.trial_id, "", "finished", Outcome(state=JobState.LOST, reason=reason))
                )
            else:
                backoff = min(10.0 * 2**attempts, 300.0)
                self._unsubmitted.append((spec, attempts + 1, now + backoff, error))
        return updates

    def find(self, specs: list[JobSpec]) -> dict[str, str]:
        """Jobs submitted for these trials whose ids were never recorded, by the job comment."""
        wanted = {s.trial_id for s in specs}
        found: dict[str, str] = {}
        rows: dict[str, SlurmRow] = {}
        with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
            rows.update(
                parse_squeue(
                    _run(["squeue", "-h", "-r", "--name", self.params["job_name"], "-o", SQUEUE_FORMAT])
                )
            )
        with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
            rows.update(
                parse_sacct(
                    _run(
                        [
                            "sacct",
                            "-X",
                            "-n",
                            "-P",
                            "--name",
                            self.params["job_name"],
                            "-S",
                            "now-7days",
                            "-o",
                            SACCT_FIELDS,
                        ]
                    )
                )
            )
        for job_id, row in rows.items():
            if not row.comment.startswith("ara:"):
                continue
            trials = row.comment[4:].split(",")
            index = int(job_id.split("_")[1]) if "_" in job_id else 0
            if index < len(trials) and trials[index] in wanted:
                found[trials[index]] = job_id
        return found

    def attach(self, spec: JobSpec, job_id: str) -> None:
        """Watch a job submitted by an earlier controller (ids come from the ledger)."""
        self._live[spec.trial_id] = _Job(spec, job_id, self.clock())

    def live(self) -> int:
        return len(self._live) + len(self._unsubmitted)

    def cancel(self, trial_id: str) -> None:
        job = self._live.get(trial_id)
        if job is None:
            return
        job.cancelled = True
        # A failed scancel is not fatal: the next poll reports what became of the job.
        with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
            _run(["scancel", job.job_id])

    def close(self) -> None:
        """Nothing to release: jobs belong to Slurm, and a later controller can re-attach."""

    # -- watching -----------------------------------------------------------------------------
    def wake_in(self) -> float:
        """Seconds until the next sacct query is due (the controller naps no longer than this)."""
        if not self._live:
            return math.inf
        due = self._last_query + self.poll_interval
        if any(0 < job.early_queries < _ENDING_QUERIES for job in self._live.values()):
            due = min(due, self._last_query + _ENDING_SPACING_S)  # ending: sacct soon says so
        return max(0.0, due - self.clock())

    def _ending_jobs(self) -> list[_Job]:
        return [
            job
            for job in self._live.values()
            if job.running
            and job.early_queries < _ENDING_QUERIES
            and (Path(job.spec.trial_dir) / OUTCOME_FILE).exists()
        ]

    def ending(self) -> bool:
        """Whether a running job has written its outcome: a stat per job, no scheduler call."""
        return bool(self._ending_jobs())

    def _ending(self, now: float) -> bool:
        """A running job wrote its outcome: ask sacct now (a few times, half a second apart)."""
        if now - self._last_query < _ENDING_SPACING_S:
            return False
        ending = self._ending_jobs()
        for job in ending:
            job.early_queries += 1
        return bool(ending)

    def poll(self) -> list[JobUpdate]:
        updates, self._pending = self._pending, []
        now = self.clock()
        if self._unsubmitted:
            updates += self._retry_submissions()
        if not self._live or (now - self._last_query < self.poll_interval and not self._ending(now)):
            return updates
        self._last_query = now
        rows = self._query()
        missing = []
        for job in list(self._live.values()):
            row = rows.get(job.job_id)
            if row is None:
                if self.watch != "sacct" or now - job.submitted > self.grace_s:
                    missing.append(job)
                continue  # new jobs reach accounting only after up to 5 s: pending, not unknown
            update = self._update(job, row)
            if update:
                updates.append(update)
        for job in missing:
            update = self._resolve_missing(job)
            if update:
                updates.append(update)
        return updates

    def _query(self) -> dict[str, SlurmRow]:
        ids = sorted({job.job_id.split("_")[0] for job in self._live.values()})
        if self.watch == "sacct" or self._polls_degraded % _SACCT_RETRY_POLLS == 0:
            try:
                out = _run(["sacct", "-X", "-n", "-P", "-o", SACCT_FIELDS, "-j", ",".join(ids)])
                self.sacct_calls += 1
                self.watch, self._polls_degraded = "sacct", 0
                return parse_sacct(out)
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
                self.sacct_calls += 1
                self.watch = f"squeue (degraded: sacct failed: {exc})"
        self._polls_degraded += 1
        try:
            out = _run(["squeue", "-h", "-r", "--name", self.params["job_name"], "-o", SQUEUE_FORMAT])
            self.squeue_calls += 1
            return parse_squeue(out)
        except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
            self.watch = f"blind (degraded: sacct and squeue failed: {exc})"
            return {
                job.job_id: SlurmRow(job.job_id, "RUNNING" if job.running else "PENDING")
                for job in self._live.values()
            }

    def _update(self, job: _Job, row: SlurmRow) -> JobUpdate | None:
        state = row.ours
        if state is None:
            if row.state.startswith("RUNNING") and job.requeued:
                job.requeued, job.released, job.releases = 0.0, 0.0, 0  # running again after a requeue
            if row.state.startswith("RUNNING") and not job.running:
                job.running = True
                return JobUpdate(job.spec.trial_id, job.job_id, "running")
            if row.state.startswith("PENDING"):
                return self._pending_update(job, row)
            return None
        return self._finish(job, state, row)

    def _pending_update(self, job: _Job, row: SlurmRow) -> JobUpdate | None:
        """Say why a job waits (once per reason); end one that waited past max_pending_s."""
        now = self.clock()
        if job.running and not job.requeued:
            job.requeued = now
        if row.reason and row.reason != job.reason:
            job.reason = row.reason
            return JobUpdate(job.spec.trial_id, job.job_id, "pending", note=row.reason)
        if job.requeued and row.reason in ("", "BeginTime") and now - job.requeued >= 2 * self.poll_interval:
            held = self._held_back(job, now)
            if held is not None:
                return held
        waited = self.clock() - job.submitted
        if self.max_pending_s is not None and waited > self.max_pending_s:
            why = row.reason
            with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
                if not why:  # accounting may not have the reason yet; the queue has it
                    why = _run(["squeue", "-h", "-j", job.job_id, "-o", "%r"]).strip()
                _run(["scancel", job.job_id])
            reason = f"pending for {waited / 60:.1f} min ({why or 'no reason given'}); cancelled"
            del self._live[job.spec.trial_id]
            outcome = Outcome(state=JobState.LOST, reason=reason)
            return JobUpdate(job.spec.trial_id, job.job_id, "finished", outcome)
        return None

    def _held_back(self, job: _Job, now: float) -> JobUpdate | None:
        """Slurm holds a requeued job back (BeginTime, about two minutes) while its slot idles: ask
        it to start the job now; where that is not allowed, or Slurm keeps putting the start time
        back, cancel it and report it lost, so the same trial is submitted again at once (an
        infrastructure retry). sacct may not name the reason for many seconds, so the job's
        EligibleTime in `scontrol show job` decides."""
        if job.release_refused:
            if now - job.released < 2 * self.poll_interval:
                return None
            return self._drop_held(job)
        if job.released and now - job.released < _RELEASE_CHECK_S:
            return None
        wait = self._eligible_in(job)
        if wait is None or wait <= _RELEASE_CHECK_S:
            job.released = now  # not held back, or the release held: the scheduler starts it
            return None
        if job.releases >= _MAX_RELEASES:
            return self._drop_held(job)
        job.released, job.releases = now, job.releases + 1
        try:
            _run(["scontrol", "update", f"jobid={job.job_id}", "starttime=now"])
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            job.release_refused = True
        return None

    def _eligible_in(self, job: _Job) -> float | None:
        """Seconds until Slurm lets the job start, per `scontrol show job`; None where unknown."""
        try:
            eligible = eligible_at(_run(["scontrol", "show", "job", "-o", job.job_id]))
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            return None  # the controller did not answer: look again at a later poll
        return None if eligible is None else eligible - time.time()

    def _drop_held(self, job: _Job) -> JobUpdate:
        with contextlib.suppress(RuntimeError, OSError, subprocess.TimeoutExpired):
            _run(["scancel", job.job_id])
        del self._live[job.spec.trial_id]
        reason = "held back by Slurm after a requeue (BeginTime); cancelled so its slot does not idle"
        return JobUpdate(
            job.spec.trial_id, job.job_id, "finished", Outcome(state=JobState.LOST, reason=reason)
        )

    def _resolve_missing(self, job: _Job) -> JobUpdate | None:
        """A job neither accounting nor the queue shows: ask scontrol, then the trial directory."""
        row = None
        try:
            row = parse_scontrol(_run(["scontrol", "show", "job", "-o", job.job_id]))
        except (RuntimeError, OSError, subprocess.TimeoutExpired):
            row = None  # "Invalid job id": Slurm has forgotten it
        if row is not None:
            return self._update(job, row)
        if (Path(job.spec.trial_dir) / OUTCOME_FILE).exists():
            return self._finish(job, JobState.COMPLETED, SlurmRow(job.job_id, "COMPLETED"))
        return self._finish(job, JobState.LOST, SlurmRow(job.job_id, "VANISHED"))

    def _finish(self, job: _Job, state: JobState, row: SlurmRow) -> JobUpdate:
        del self._live[job.spec.trial_id]
        return JobUpdate(job.spec.trial_id, job.job_id, "finished", self._outcome(job, state, row))

    def _outcome(self, job: _Job, state: JobState, row: SlurmRow) -> Outcome:
        """The runner's outcome.json, corrected by what Slurm knows and the runner could not."""
        trial_dir = Path(job.spec.trial_dir)
        slurm_log = tail(self._stderr(job))
        log_tail = tail(trial_dir / LOG_FILE) or slurm_log
        if state is JobState.COMPLETED:
            missing_state, why = JobState.LOST, f"Slurm job {job.job_id} ended without {OUTCOME_FILE}"
        elif row.state == "VANISHED":
            missing_state, why = JobState.LOST, f"Slurm job {job.job_id} vanished from the scheduler"
        else:
            missing_state, why = state, f"Slurm job {job.job_id} ended {row.state}"
        if job.cancelled and missing_state in (JobState.CANCELLED, JobState.LOST):
            missing_state, why = JobState.CANCELLED, f"cancelled (Slurm job {job.job_id})"
        outcome = Outcome.read(
            trial_dir / OUTCOME_FILE, missing_state=missing_state, missing_reason=why, log_tail=log_tail
        )
        outcome = _reconcile(outcome, state, row, slurm_log)
        # Accounting comes from the scheduler where it has it: the job's whole allocation. sacct
        # counts whole seconds, so a sub-second job keeps the runner's finer figure.
        elapsed = max(row.elapsed_s or 0.0, outcome.elapsed)
        return replace(
            outcome,
            node=row.node or outcome.node,
            elapsed=elapsed,
            gpu_seconds=row.gpus * elapsed if row.gpus else outcome.gpu_seconds,
        )

    def _stderr(self, job: _Job) -> Path:
        from submitit.core.utils import JobPaths

        return JobPaths(self.folder / "%j", job_id=job.job_id, task_id=0).stderr


def _signalled(code: int | None) -> bool:
    """A command killed by TERM or KILL: negative from Popen, 128 + the signal from a shell."""
    return code is not None and (code < 0 or code in (128 + signal.SIGTERM, 128 + signal.SIGKILL))


def _reconcile(outcome: Outcome, state: JobState, row: SlurmRow, slurm_log: str) -> Outcome:
    """Slurm's verdict wins where the runner could not see it (it was killed before writing)."""
    infra = (JobState.TIMEOUT, JobState.OOM, JobState.NODE_FAIL, JobState.PREEMPTED)
    if outcome.state in (JobState.CANCELLED, JobState.LOST) and state in infra:
        return replace(outcome, state=state, reason=f"Slurm: {row.state}; {outcome.reason}")
    if state is JobState.CANCELLED and outcome.state is JobState.FAILED and _signalled(outcome.exit_code):
        # scancel signals every process of the job at once: the command may die of it before the
        # runner's own handler has run, and the runner then saw only a command killed by a signal.
        return replace(outcome, state=JobState.CANCELLED, reason=f"Slurm: {row.state}; {outcome.reason}")
    if outcome.state in (JobState.FAILED, JobState.LOST) and "exceeded memory limit" in slurm_log.lower():
        return replace(
            outcome, state=JobState.OOM, reason=f"Slurm: job exceeded its memory limit; {outcome.reason}"
        )
    if (
        outcome.state is JobState.LOST
        and state is JobState.FAILED
        and row.elapsed_s
        and row.timelimit_s
        and row.elapsed_s >= row.timelimit_s - 120
    ):
        # submitit's USR2 handler turns a time-limit kill into FAILED when our runner could not answer
        return replace(
            outcome, state=JobState.TIMEOUT, reason=f"Slurm: FAILED at its time limit; {outcome.reason}"
        )
    found = diagnose(slurm_log) if outcome.state is JobState.LOST else None
    if found:
        return replace(outcome, reason=f"{outcome.reason}: {found}")
    return outcome
