"""The Executor protocol every backend implements, and the job spec the trial runner reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from ..outcome import Outcome
from .tracking import WandbMode

JOB_FILE = "job.json"


@dataclass(frozen=True)
class JobSpec:
    """Everything the trial runner needs, written to trials/<id>/job.json before submission."""

    trial_id: str
    run_id: str
    run_dir: str
    trial_dir: str
    worktree: str
    workdir: str
    command: str
    eval: str | None
    metric: str
    steps: int
    time_limit_s: float
    gpus: int
    frozen: dict[str, str]
    project: str
    env: dict[str, str] = field(default_factory=dict)
    seed: int = 0
    holdout: str | None = None  # the holdout evaluation's command
    pristine: str = ""  # directory holding the run's untouched copies of the frozen files
    title: str = ""  # the hypothesis's title: the W&B run's notes
    fidelity: str = "full"  # "screen" or "full": the W&B run's job type
    wandb: WandbMode = "offline"  # [tracking] wandb
    pass_env: list[str] = field(default_factory=list)  # [task] pass_env: names passed on purpose
    hidden: list[str] = field(default_factory=list)  # workdir-relative files only the evaluation reads
    sandbox: str = "none"  # [sandbox] mode, resolved by the runner on the node that runs the job
    bwrap: str = "bwrap"
    network: bool = True
    hide: list[str] | None = None  # masked paths; None: sandbox.DEFAULT_HIDE
    writable: list[str] = field(default_factory=list)
    repo: str = ""  # the user's checkout: its hidden files are masked as well
    git_dir: str = ""  # the repository's git directory, out of the training's reach
    cpus: int = 0  # [resources] cpus_per_trial: thread pools are capped to it (0: left alone)
    metric_pattern: str | None = None  # [metric] pattern: how to read a metric printed in its own style

    @property
    def cwd(self) -> Path:
        return Path(self.worktree) / self.workdir

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> JobSpec:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True)
class JobUpdate:
    """A change the executor saw: a job started, or finished with its outcome."""

    trial_id: str
    job_id: str
    state: Literal["submitted", "pending", "running", "finished"]
    outcome: Outcome | None = None
    note: str = ""  # for "pending": the scheduler's reason


class Executor(Protocol):
    """Runs trial jobs; `poll` reports changes since the last call and never raises for a bad job."""

    name: str
    capacity: int
    watch: str  # how jobs are watched; "degraded" in it means a fallback is in use

    def submit(self, jobs: list[JobSpec]) -> dict[str, str]:
        """Start (or queue) the jobs; returns trial id -> job id."""
        ...

    def poll(self) -> list[JobUpdate]: ...

    def attach(self, spec: JobSpec, job_id: str) -> None:
        """Watch a job an earlier controller started (its id from the ledger)."""
        ...

    def find(self, specs: list[JobSpec]) -> dict[str, str]:
        """Jobs already started for these trials (a controller died before recording them)."""
        ...

    def cancel(self, trial_id: str) -> None: ...

    def live(self) -> int:
        """Jobs submitted and not yet reported finished."""
        ...

    def close(self) -> None:
        """Drop the executor; running jobs go on (a resumed controller re-attaches to them)."""
        ...
