"""The run directory on the shared filesystem: its layout, atomic writes and the controller lock."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import RunLockedError, UsageError

# A trial directory's files: the runner writes them on the job side, the controller and the
# read side (views, `ara logs`) read them, so their names live here and not in the runner.
LOG_FILE = "train.log"
OUTCOME_FILE = "outcome.json"
METRICS_FILE = "metrics.json"
HOLDOUT_FILE = "holdout.json"
EVAL_LOG = "eval.log"  # the evaluation's own output: the only stream its metric block is read from
EVAL_ROOM = "eval-room"  # the evaluation's scratch: its metrics file, bootstrap and bytecode cache
COMMAND_OUT = "command-out"  # without an evaluation: where the command writes its metrics file

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: os.umask can only be read by setting it


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file and rename, so readers on NFS never see half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        # backslashreplace: a lone surrogate in model-written text is written as an escape, not a crash
        with os.fdopen(fd, "w", encoding="utf-8", errors="backslashreplace") as fh:
            fh.write(text)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600: colleagues on the cluster read runs too
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")


def new_run_id(task_name: str, now: float) -> str:
    return f"{task_name}-{time.strftime('%Y%m%d-%H%M%S', time.localtime(now))}"


def process_start(pid: int) -> str | None:
    """Start time of a process (clock ticks since boot): a pid reused by another process differs."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]  # a zombie has ended


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class RunDir:
    path: Path

    @property
    def run_id(self) -> str:
        return self.path.name

    @property
    def ledger(self) -> Path:
        return self.path / "ledger.sqlite"

    @property
    def task_copy(self) -> Path:
        return self.path / "task.toml"

    @property
    def results(self) -> Path:
        return self.path / "results.tsv"

    @property
    def report(self) -> Path:
        return self.path / "report.md"

    @property
    def progress(self) -> Path:
        return self.path / "progress.png"

    @property
    def guidance(self) -> Path:
        return self.path / "guidance.md"

    @property
    def playbook(self) -> Path:
        return self.path / "playbook.md"

    @property
    def controller_log(self) -> Path:
        return self.path / "controller.log"

    @property
    def lock_path(self) -> Path:
        return self.path / "controller.lock"

    @property
    def stop_path(self) -> Path:
        return self.path / "stop.request"

    @property
    def worktrees(self) -> Path:
        return self.path / "worktrees"

    def trial_dir(self, trial_id: str) -> Path:
        return self.path / "trials" / trial_id

    @property
    def frozen(self) -> Path:
        """Untouched copies of the frozen files: every evaluation runs from these."""
        return self.path / "frozen"

    @property
    def requests(self) -> Path:
        return self.path / "requests"

    @classmethod
    def create(cls, root: Path, run_id: str) -> RunDir:
        root.mkdir(parents=True, exist_ok=True)
        ignore = root / ".gitignore"
        if not ignore.exists():
            # The run root often sits inside the user's repo; keep `git status` clean there.
            ignore.write_text("*\n", encoding="utf-8")
        path = root / "runs" / run_id
        suffix = 1
        while path.exists():
            suffix += 1
            path = root / "runs" / f"{run_id}-{suffix}"
        (path / "trials").mkdir(parents=True)
        return cls(path)

    # -- the one-controller lock ----------------------------------------------------------------
    # A lock names its holder (host, pid, the pid's start time, Slurm job) and carries a heartbeat.
    # It is stale when its pid is gone (same host), when its heartbeat is older than STALE_S (other
    # hosts), or when the holder was an earlier run of this very Slurm job (a requeued controller).
    STALE_S = 300.0

    def lock_holder(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.lock_path.read_text(encoding="utf-8"))
        except (FileNotFoundError, ValueError):
            return None

    def holder_alive(self, holder: dict[str, Any], now: float | None = None) -> bool | None:
        """True/False when it can be told from here; None when the holder is elsewhere and beating."""
        now = time.time() if now is None else now
        job = os.environ.get("SLURM_JOB_ID")
        if job and holder.get("slurm_job") == job and holder.get("pid") != os.getpid():
            return False  # this job was requeued or restarted its controller: the old one is gone
        if holder.get("host") == socket.gethostname():
            pid = int(holder.get("pid", -1))
            return _pid_alive(pid) and process_start(pid) == holder.get("start", process_start(pid))
        if now - float(holder.get("beat", holder.get("since", 0))) > self.STALE_S:
            return False
        return None

    def _holder(self) -> dict[str, Any]:
        now = time.time()
        info = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "start": process_start(os.getpid()),
            "since": now,
            "beat": now,
        }
        if os.environ.get("SLURM_JOB_ID"):
            info["slurm_job"] = os.environ["SLURM_JOB_ID"]
        return info

    def acquire(self) -> None:
        """Take the controller lock; a stale holder is replaced, by exactly one of any number of
        processes that try at once. The lock appears whole (hard link of a written file, atomic on
        NFS too) and a stale one is replaced only under a take-over guard, after reading it again."""
        mine = self._holder()
        for _ in range(200):
            if self._publish(mine):
                return
            holder = self.lock_holder()
            if holder is None:
                if not self._unreadable_and_old():
                    time.sleep(0.01)  # gone between our try and our read: try again
                    continue
            elif self.holder_alive(holder) is not False:
                since = time.strftime("%Y-%m-%d %H:%M", time.localtime(holder.get("since", 0)))
                raise RunLockedError(
                    f"run {self.run_id} is held by controller pid {holder.get('pid')} on "
                    f"{holder.get('host')} since {since}; stop it with `ara stop {self.run_id}` first"
                )
            if self._take_over(holder, mine):
                return
        raise RunLockedError(f"could not take {self.lock_path}: other controllers keep racing for it")

    def _publish(self, info: dict[str, Any]) -> bool:
        fd, tmp = tempfile.mkstemp(prefix=".controller.lock.", dir=self.path)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(info, fh)
            os.chmod(tmp, 0o644)
            try:
                os.link(tmp, self.lock_path)
            except FileExistsError:
                return False
            return True
        finally:
            Path(tmp).unlink(missing_ok=True)

    def _unreadable_and_old(self) -> bool:
        """A lock file that exists but holds no holder (an older ara died while writing it)."""
        try:
            return time.time() - self.lock_path.stat().st_mtime > 10.0
        except FileNotFoundError:
            return False

    def _take_over(self, stale: dict[str, Any] | None, mine: dict[str, Any]) -> bool:
        guard = self.path / "controller.lock.takeover"
        try:
            fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            with contextlib.suppress(FileNotFoundError):
                if time.time() - guard.stat().st_mtime > 60.0:  # left by a process that died in here
                    guard.unlink()
            time.sleep(0.01)
            return False
        try:
            if self.lock_holder() == stale:  # nobody replaced it meanwhile
                self.lock_path.unlink(missing_ok=True)
                return self._publish(mine)
            return False
        finally:
            os.close(fd)
            guard.unlink(missing_ok=True)

    def _is_mine(self, holder: dict[str, Any] | None) -> bool:
        return bool(
            holder
            and holder.get("pid") == os.getpid()
            and holder.get("host") == socket.gethostname()
            and holder.get("start") == process_start(os.getpid())
        )

    def heartbeat(self) -> bool:
        """Refresh the lock's beat; False when it is no longer this process's (taken over)."""
        holder = self.lock_holder()
        if holder is None or not self._is_mine(holder):
            return False
        write_json(self.lock_path, {**holder, "beat": time.time()})
        return True

    def release(self) -> None:
        if self._is_mine(self.lock_holder()):
            self.lock_path.unlink(missing_ok=True)

    # -- guidance (appended by `ara guide`, read by the controller from where it left off) ----
    def add_guidance(self, text: str, now: float) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M", time.localtime(now))
        with self.guidance.open("a", encoding="utf-8") as fh:
            fh.write(f"- {stamp}: {' '.join(text.split())}\n")

    def guidance_from(self, offset: int) -> tuple[str, int]:
        """Guidance appended after byte `offset`, and the new offset."""
        try:
            with self.guidance.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
        except FileNotFoundError:
            return "", offset
        return data.decode("utf-8", errors="replace"), offset + len(data)

    # -- stop requests (written by `ara stop`, read by the controller) ------------------------
    def request_stop(self, cancel: bool, by: str = "`ara stop`") -> None:
        """Ask the controller to stop; `by` says who asked, for the run's stop reason."""
        atomic_write_text(self.stop_path, f"{'cancel' if cancel else 'finish'} {by}\n")

    def request_rerun(self, trial_id: str, steps: int | None, seeds: int, now: float) -> str:
        """Ask the live controller for re-runs; returns the request id (rows carry it: idempotent)."""
        rid = f"rerun-{time.time_ns()}"
        self.requests.mkdir(exist_ok=True)
        write_json(
            self.requests / f"{rid}.json",
            {"id": rid, "trial": trial_id, "steps": steps, "seeds": seeds, "at": now},
        )
        return rid

    def rerun_requests(self) -> list[dict[str, Any]]:
        found = []
        for path in sorted(self.requests.glob("rerun-*.json")) if self.requests.is_dir() else []:
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # half-written by a dying `ara rerun`: atomic writes make this rare
        return found

    def done_request(self, rid: str) -> None:
        (self.requests / f"{rid}.json").unlink(missing_ok=True)

    def stop_requested(self) -> str | None:
        try:
            return self.stop_path.read_text(encoding="utf-8").strip() or "finish"
        except FileNotFoundError:
            return None


def run_roots(root: Path | None = None) -> list[Path]:
    """The `runs/` folders searched: --root / $ARA_ROOT, else `.ara` here and in the parents."""
    roots = [root] if root else []
    if not roots and os.environ.get("ARA_ROOT"):
        roots = [Path(os.environ["ARA_ROOT"])]
    if not roots:
        here = Path.cwd().resolve()
        roots = [d / ".ara" for d in (here, *here.parents) if (d / ".ara" / "runs").is_dir()]
    return [r / "runs" for r in roots if (r / "runs").is_dir()]


def all_runs(root: Path | None = None) -> list[RunDir]:
    """Every run under the roots, oldest first."""
    found = [p for c in run_roots(root) for p in c.iterdir() if (p / "ledger.sqlite").is_file()]
    return [RunDir(p.resolve()) for p in sorted(found, key=lambda p: (p / "ledger.sqlite").stat().st_ctime)]


def find_run(run: str | None, root: Path | None = None) -> RunDir:
    """A run by directory path, by id under a run root, or the latest run when run is None."""
    if run and (Path(run) / "ledger.sqlite").is_file():
        return RunDir(Path(run).resolve())
    candidates = run_roots(root)
    if run:
        for runs in candidates:
            if (runs / run / "ledger.sqlite").is_file():
                return RunDir((runs / run).resolve())
        raise UsageError(
            f"no run {run!r} under {', '.join(map(str, candidates)) or 'any .ara/ here'}; "
            "pass the run directory or --root"
        )
    found = all_runs(root)
    if not found:
        raise UsageError(
            "no runs found here; pass a run id or directory, or --root (start one with `ara submit`)"
        )
    return found[-1]
