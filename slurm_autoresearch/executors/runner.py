"""Trial runner, the job side: `python -m slurm_autoresearch.executors.runner TRIAL_DIR`.

Over 400 lines: Runner is a trial's life on the node in the order it happens, with the signal
handling that must see all of it; what is not that story lives apart (the metrics in metrics.py,
the sandbox room in sandbox.py, the file names in rundir.py).

Checks the frozen files, runs the task command in the trial's worktree, runs the frozen
evaluation, checks the frozen files again, and writes outcome.json. Whatever happens to the
training code, the runner writes an outcome; only a broken runner exits without one.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from ..jobenv import job_environ
from ..metrics import read_metrics
from ..monitor import diagnose, tail
from ..outcome import JobState, Outcome
from ..rundir import (
    COMMAND_OUT,
    EVAL_LOG,
    EVAL_ROOM,
    HOLDOUT_FILE,
    LOG_FILE,
    METRICS_FILE,
    OUTCOME_FILE,
    write_json,
)
from ..surface import frozen_changes, sha256_file
from .base import JOB_FILE, JobSpec
from .sandbox import PROTECTED, SCRATCH_CACHES, Room, clean_python_env, descendants, resolve
from .tracking import wandb_env

_KILL_GRACE_S = 5.0
Finish = Callable[..., Outcome]
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)


def trial_env(spec: JobSpec, base: Mapping[str, str]) -> dict[str, str]:
    """The job's environment: the allowlisted part of the node's, what the task passes on purpose,
    and ara's own variables; model-written code runs here, so never a secret it did not ask for."""
    # Each library would start a thread per core of the node, and trials sharing it would fight
    # over the CPUs: pools get cpus_per_trial threads, unless the task sets them itself.
    caps = dict.fromkeys(THREAD_VARIABLES, str(spec.cpus)) if spec.cpus else {}
    env = job_environ(base, spec.pass_env, caps)
    trial_dir = Path(spec.trial_dir)
    env.update(
        wandb_env(
            project=spec.project,
            run_id=spec.run_id,
            trial_id=spec.trial_id,
            trial_dir=trial_dir,
            title=spec.title,
            fidelity=spec.fidelity,
            mode=spec.wandb,
        )
    )
    # The task's own values win over ours (W&B's, the thread caps), never over ARA_* or the key.
    env.update(job_environ({}, (), {k: v for k, v in spec.env.items() if not k.startswith("ARA_")}))
    env.update(
        ARA_TRIAL_ID=spec.trial_id,
        ARA_RUN_DIR=spec.run_dir,
        ARA_STEPS=str(spec.steps),
        ARA_SEED=str(spec.seed),
        ARA_METRICS_PATH=str(trial_dir / METRICS_FILE),
        PYTHONUNBUFFERED="1",
    )
    if spec.gpus == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a trial that asked for no GPU sees none, whatever the node has
    # `python` in the task's command means the interpreter running this runner, as validated.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "/usr/bin:/bin")])
    return env


class Runner:
    def __init__(self, spec: JobSpec) -> None:
        self.spec = spec
        self.trial_dir = Path(spec.trial_dir)
        self.log = self.trial_dir / LOG_FILE
        self.metrics_path = self.trial_dir / METRICS_FILE
        self.env = trial_env(spec, os.environ)
        # With a frozen evaluation, only the evaluation may write metrics: training gets no path.
        self.train_env = dict(self.env)
        if spec.eval:
            self.train_env.pop("ARA_METRICS_PATH")
        else:  # a folder of its own: the command's room reaches no other part of the trial directory
            self.train_env["ARA_METRICS_PATH"] = str(self.trial_dir / COMMAND_OUT / METRICS_FILE)
        self.stop: tuple[JobState, str] | None = None
        self.child: subprocess.Popen[bytes] | None = None
        self.shell = shutil.which("bash") or "/bin/sh"
        self.hidden = set(spec.hidden)
        # Frozen files training may see; hidden ones are out of its worktree until the evaluation.
        self.watched = {rel: h for rel, h in spec.frozen.items() if rel not in self.hidden}
        self.room: Room | None = None
        self.sandbox = ""

    def _on_signal(self, signum: int, _frame: object) -> None:
        # Slurm sends USR2 ahead of the time limit (--signal); TERM and INT are cancels.
        if signum == signal.SIGUSR2:
            self.stop = (JobState.TIMEOUT, "Slurm's time limit is near (USR2)")
        elif self.stop is None:
            self.stop = (JobState.CANCELLED, f"cancelled ({signal.Signals(signum).name})")
        if self.child and self.child.poll() is None:
            self._signal(self.child.pid, signal.SIGTERM)

    def _signal(self, pid: int, sig: int) -> None:
        """The command's processes: inside a room, SIGTERM goes to every process in it (bwrap
        itself would die of it and take them down at once, with no time to save anything)."""
        if self.room is not None and sig == signal.SIGTERM:
            for inner in descendants(pid):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(inner, sig)
            return
        signal_group(pid, sig)

    def _note(self, text: str) -> None:
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(f"[ara] {text}\n")

    def _run(
        self, argv: list[str], deadline: float, env: dict[str, str], out: Path | None = None
    ) -> tuple[int | None, tuple[JobState, str] | None]:
        with (out or self.log).open("ab") as fh:
            self.child = subprocess.Popen(
                argv,
                cwd=self.spec.cwd,
                env=env,
                stdout=fh,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        child = self.child
        while True:
            try:
                code = child.wait(timeout=0.2)
                # Background processes the command left behind could touch files during the
                # evaluation: the step's process group ends with it (in a room, the PID
                # namespace already took every one of them down with its first process).
                signal_group(child.pid, signal.SIGKILL)
                # A cancel forwards SIGTERM to the command, which then exits "normally".
                return code, self.stop
            except subprocess.TimeoutExpired:
                pass
            stop = self.stop
            if stop is None and time.monotonic() > deadline:
                stop = (JobState.TIMEOUT, f"over the {self.spec.time_limit_s:.0f} s limit")
            if stop:
                self._signal(child.pid, signal.SIGTERM)
                try:
                    child.wait(timeout=_KILL_GRACE_S)
                except subprocess.TimeoutExpired:
                    signal_group(child.pid, signal.SIGKILL)
                    child.wait()
                signal_group(child.pid, signal.SIGKILL)  # stragglers that left the shell behind
                return None, stop

    def _room(self) -> str:
        """Set up the sandbox this job asked for; the reason it cannot when [sandbox] mode = "bwrap"."""
        spec = self.spec
        used, why = resolve(spec.sandbox, spec.bwrap)
        self.sandbox = used
        if used != PROTECTED:
            if spec.sandbox == PROTECTED:
                return f'[sandbox] mode = "bwrap", but {why}'
            self._note(f"sandbox: none ({why}): the metric is NOT protected from the trial's code")
            return ""
        self.room = Room.for_job(spec, home=self.env.get("HOME", os.path.expanduser("~")))
        for env in (self.env, self.train_env):
            for name, path in SCRATCH_CACHES.items():
                env.setdefault(name, path)
            # A job's TMPDIR (often node scratch) is read-only in the room unless made writable.
            if env.get("TMPDIR") and env["TMPDIR"] not in spec.writable:
                env["TMPDIR"] = "/tmp"
        net = "" if spec.network else ", no network"
        self._note(f"sandbox: bwrap (own PID namespace, writes only its worktree{net})")
        return ""

    def _hide_answer_key(self) -> None:
        """Hidden files leave the worktree while training runs (the pristine copies return for the
        evaluation and leave again after it)."""
        for rel in self.hidden:
            with contextlib.suppress(FileNotFoundError, IsADirectoryError):
                (self.spec.cwd / rel).unlink()

    def run(self) -> Outcome:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2):
            signal.signal(sig, self._on_signal)
        started = time.monotonic()
        started_at = time.time()
        deadline = started + self.spec.time_limit_s
        self.metrics_path.unlink(missing_ok=True)
        # A requeued job runs again from the start: what an earlier attempt left is not its outcome.
        (self.trial_dir / OUTCOME_FILE).unlink(missing_ok=True)
        job = os.environ.get("SLURM_JOB_ID", "")
        if os.environ.get("SLURM_ARRAY_JOB_ID"):
            job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ.get('SLURM_ARRAY_TASK_ID', '')}"
        self._note(f"trial {self.spec.trial_id} in {self.spec.cwd}" + (f" (Slurm job {job})" if job else ""))

        def finish(
            state: JobState,
            reason: str = "",
            exit_code: int | None = None,
            metrics: dict[str, float] | None = None,
            frozen: list[str] | None = None,
            holdout: dict[str, float] | None = None,
        ) -> Outcome:
            self._hide_answer_key()
            elapsed = time.monotonic() - started
            maxrss_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
            log_tail = tail(self.log)
            metric = (metrics or {}).get(self.spec.metric)
            if state is JobState.COMPLETED and (metric is None or not math.isfinite(metric)):
                found = ", ".join(sorted(metrics or {})) or "none"
                where = f"{METRICS_FILE} or the '---' block"
                if self.spec.metric_pattern:
                    where = f"{METRICS_FILE}, the '---' block or [metric] pattern"
                reason = reason or (
                    f"no finite metric {self.spec.metric!r} in {where} (metrics found: {found})"
                )
                metric = None
            if state is not JobState.COMPLETED and not reason:
                reason = diagnose(log_tail) or state.value
            if state is JobState.FAILED and diagnose(log_tail) == "out of memory":
                state = JobState.OOM
            self._note(f"{state.value}" + (f": {reason}" if reason else ""))
            outcome = Outcome(
                state=state,
                exit_code=exit_code,
                metric=metric,
                metrics=metrics or {},
                elapsed=round(elapsed, 3),
                gpu_seconds=round(elapsed * self.spec.gpus, 3),
                memory_gb=round(maxrss_kib / 2**20, 3),
                reason=reason,
                log_tail=tail(self.log),
                frozen_changed=frozen or [],
                node=socket.gethostname(),
                started_at=started_at,
                ended_at=time.time(),
                holdout=holdout or {},
                sandbox=self.sandbox,
            )
            write_json(self.trial_dir / OUTCOME_FILE, outcome.to_dict())
            return outcome

        root = self.spec.cwd
        if not root.is_dir():  # the machinery's fault, not the trial's: LOST is retried
            return finish(JobState.LOST, f"worktree {root} is missing")
        refused = self._room()
        if refused:
            return finish(JobState.FAILED, refused)
        changed = frozen_changes(root, self.watched)
        if changed:
            return finish(
                JobState.TAMPERED, f"frozen files differ before the job: {', '.join(changed)}", frozen=changed
            )
        self._hide_answer_key()
        written = self.trial_dir / COMMAND_OUT / METRICS_FILE
        shutil.rmtree(written.parent, ignore_errors=True)
        if not self.spec.eval:
            written.parent.mkdir(parents=True)
        self._note(f"$ {self.spec.command}  (ARA_STEPS={self.spec.steps}, ARA_SEED={self.spec.seed})")
        failed = self._step("command", self._argv(self.spec.command), deadline, finish, self.train_env)
        if failed:
            return failed
        if not self.spec.eval:  # the task's contract: the command itself reports the metric
            if written.is_file() and not written.is_symlink():
                shutil.copyfile(written, self.metrics_path)
            metrics = self._metrics(self.metrics_path, _read_from(self.log, 0))
            return finish(JobState.COMPLETED, exit_code=0, metrics=metrics)
        if self.metrics_path.exists():
            self.metrics_path.unlink()
            return finish(
                JobState.TAMPERED,
                f"the training wrote its own metrics file {METRICS_FILE}; only the frozen evaluation may",
            )
        metrics, failed = self._evaluate("evaluation", self.spec.eval, self.metrics_path, deadline, finish)
        if failed:
            return failed
        holdout: dict[str, float] = {}
        if self.spec.holdout:
            path = self.trial_dir / HOLDOUT_FILE
            holdout, failed = self._evaluate("holdout", self.spec.holdout, path, deadline, finish)
            if failed:
                return failed
        outcome = finish(JobState.COMPLETED, exit_code=0, metrics=metrics, holdout=holdout)
        return outcome

    def _metrics(self, path: Path, output: str) -> dict[str, float]:
        return read_metrics(path, output, self.spec.metric, self.spec.metric_pattern)

    def _argv(self, command: str, evaluation: tuple[Path, Path] | None = None) -> list[str]:
        argv = [self.shell, "-c", command]
        if self.room is None:
            return argv
        if evaluation:
            return self.room.evaluation(argv, *evaluation)
        return self.room.training(argv, () if self.spec.eval else (self.trial_dir / COMMAND_OUT,))

    def _evaluate(
        self, what: str, command: str, path: Path, deadline: float, finish: Finish
    ) -> tuple[dict[str, float], Outcome | None]:
        """A frozen evaluation in a clean room: the pristine frozen files in place and first on the
        import path, the worktree read-only (in a sandbox), its metric read from its own output
        stream or the metrics file in its own scratch folder, which nothing else can reach."""
        broken = self._restore_pristine()
        if broken:
            return {}, finish(JobState.TAMPERED, broken)
        scratch = self.trial_dir / EVAL_ROOM
        shutil.rmtree(scratch, ignore_errors=True)
        scratch.mkdir(parents=True)
        out = scratch / METRICS_FILE
        path.unlink(missing_ok=True)
        pristine = Path(self.spec.pristine) if self.spec.pristine else scratch / "frozen"
        pristine.mkdir(exist_ok=True)
        env = clean_python_env(
            dict(self.env, ARA_METRICS_PATH=str(out)),
            pristine,
            scratch,
            self.spec.cwd,
            list(self.spec.frozen),
        )
        self._note(f"$ {command}  ({what}, frozen)")
        stream = self.trial_dir / EVAL_LOG
        stream.unlink(missing_ok=True)
        room = (Path(os.path.realpath(pristine)), Path(os.path.realpath(scratch)))
        code, stop = self._run(self._argv(command, room), deadline, env, out=stream)
        output = _read_from(stream, 0) if stream.exists() else ""
        with self.log.open("a", encoding="utf-8") as fh:
            fh.write(output)
        failed = self._judge(what, code, stop, finish)
        if failed:
            return {}, failed
        metrics = self._metrics(out, output)
        if out.exists():
            shutil.copyfile(out, path)
        return metrics, None

    def _restore_pristine(self) -> str:
        """Put the run's own copies of the frozen files in place (whatever the training left there,
        symlinks included); a copy that does not match its recorded hash is refused."""
        if not self.spec.pristine:
            return ""
        store = Path(self.spec.pristine)
        for rel, expected in self.spec.frozen.items():
            source = store / rel
            if source.is_symlink() or not source.is_file() or sha256_file(source) != expected:
                return f"the run's pristine copy of {rel} does not match its recorded hash"
            target = self.spec.cwd / rel
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)  # training put a directory where a frozen file belongs
            target.parent.mkdir(parents=True, exist_ok=True)
            tmp = target.with_name(f".{target.name}.ara-pristine")
            shutil.copyfile(source, tmp)
            os.replace(tmp, target)  # replaces a symlink itself, never writes through it
        return ""

    def _step(
        self, what: str, argv: list[str], deadline: float, finish: Finish, env: dict[str, str]
    ) -> Outcome | None:
        """Run one command; the failed outcome when it did not succeed or touched a frozen file."""
        code, stop = self._run(argv, deadline, env)
        return self._judge(what, code, stop, finish)

    def _judge(
        self, what: str, code: int | None, stop: tuple[JobState, str] | None, finish: Finish
    ) -> Outcome | None:
        if stop:
            return finish(stop[0], f"{what}: {stop[1]}")
        changed = frozen_changes(self.spec.cwd, self.watched)
        if changed:
            reason = f"frozen files changed during the {what}: {', '.join(changed)}"
            return finish(JobState.TAMPERED, reason, exit_code=code, frozen=changed)
        if code != 0:
            return finish(JobState.FAILED, f"{what} {_exit_reason(code, tail(self.log))}", exit_code=code)
        return None


def _read_from(path: Path, offset: int, limit: int = 1 << 20) -> str:
    with path.open("rb") as fh:
        fh.seek(max(offset, fh.seek(0, 2) - limit))
        return fh.read().decode("utf-8", errors="replace")


def _exit_reason(code: int | None, log_tail: str) -> str:
    if code is not None and code < 0:
        try:
            base = f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            base = f"killed by signal {-code}"
    else:
        base = f"exit code {code}"
    found = diagnose(log_tail)
    return f"{base}: {found}" if found else base


def signal_group(pid: int, sig: int) -> None:
    """Signal a process group; one that is already gone is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def run_trial(trial_dir: str) -> dict[str, object]:
    """Entry point for submitit: runs the trial and returns a small summary (the outcome is on disk)."""
    spec = JobSpec.from_dict(json.loads((Path(trial_dir) / JOB_FILE).read_text(encoding="utf-8")))
    outcome = Runner(spec).run()
    return {"state": outcome.state.value, "metric": outcome.metric}


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m slurm_autoresearch.executors.runner TRIAL_DIR", file=sys.stderr)
        return 2
    spec = JobSpec.from_dict(json.loads((Path(args[0]) / JOB_FILE).read_text(encoding="utf-8")))
    outcome = Runner(spec).run()
    return 0 if outcome.state is JobState.COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main())
