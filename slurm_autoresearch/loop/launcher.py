"""Starting and resuming runs: the run directory, its ledger and the collaborators.

`create_run` makes a run from a validated task (nothing runs yet); `open_run` builds the
controller for a run directory from its ledger and frozen task copy alone, so the same path
serves a fresh run, `ara resume`, a detached controller and a controller running as a Slurm job.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict, Unpack

import tomli_w

from ..errors import UsageError
from ..evidence import Rule
from ..executors import Executor
from ..executors.local import LocalExecutor
from ..executors.sandbox import resolve
from ..executors.sbatch import slurm_parameters
from ..executors.slurm import SlurmExecutor
from ..jobenv import hide_own_environ
from ..ledger import Ledger
from ..llm import LLM
from ..monitor import Monitor
from ..planners import OfflinePlanner, Planner
from ..playbook import Playbook
from ..rundir import RunDir, atomic_write_text, new_run_id
from ..spec import TaskSpec
from ..surface import EditSurface
from ..task import Task, detect_gpus, read_spec
from ..workspace import Workspace
from .controller import Controller, Echo
from .preflight import has_api_key
from .summarizer import ClaudeSummarizer, RuleSummarizer, Summarizer


def make_executor(task: Task, rundir: RunDir) -> Executor:
    """The executor the task resolved to: Slurm job arrays, or local processes."""
    spec = task.spec
    if task.executor == "slurm":
        params = slurm_parameters(spec, job_name=f"ara-{rundir.run_id}", capacity=spec.run.parallel)
        return SlurmExecutor(
            spec.run.parallel,
            rundir.path / "slurm",
            params,
            python=spec.slurm.python,
            poll_interval=spec.slurm.poll_seconds,
            max_pending_s=spec.slurm.max_pending_minutes * 60 if spec.slurm.max_pending_minutes else None,
            submit_retries=spec.slurm.submit_retries,
        )
    return LocalExecutor(
        capacity=spec.run.parallel,
        gpus_per_job=spec.resources.gpus_per_trial,
        gpu_ids=list(spec.resources.gpus) or detect_gpus(),
    )


def make_models(task: Task, llm: LLM | None) -> tuple[Planner, Summarizer, LLM | None]:
    """Planner and summarizer as resolved by the task; the Claude ones share one client."""
    from ..planners.claude import ClaudePlanner

    spec = task.spec
    if llm is None and "anthropic" in (task.planner, task.summarizer):
        llm = LLM(spec.models)
    offline = OfflinePlanner(spec)
    planner: Planner = ClaudePlanner(llm, offline) if task.planner == "anthropic" and llm else offline
    summarizer: Summarizer = (
        ClaudeSummarizer(llm, spec) if task.summarizer == "anthropic" and llm else RuleSummarizer(spec)
    )
    return planner, summarizer, llm


def _workspace(task: Task, rundir: RunDir) -> Workspace:
    return Workspace(
        task.repo,
        task.workdir,
        rundir.run_id,
        rundir.worktrees,
        task.surface,
        task.spec.surface.max_file_kb * 1024,
    )


def create_run(task: Task, now: float) -> RunDir:
    """The run directory and its ledger for a validated task; nothing runs yet."""
    rundir = RunDir.create(task.run_root, new_run_id(task.name, now))
    # The task as run (command-line overrides applied): what `ara resume` and reports read.
    header = f"# ara: the task as submitted from {task.path}\n"
    atomic_write_text(rundir.task_copy, header + tomli_w.dumps(task.data))
    spec = task.spec
    ws = _workspace(task, rundir)
    try:
        base = ws.head()
        frozen = ws.frozen_hashes(base)
        for rel in frozen:  # every evaluation runs from these copies, whatever a trial does to its own
            target = rundir.frozen / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(ws.read_bytes(base, rel))
        best = ws.best_branch  # created by the first keep: a run that keeps nothing leaves no branch
    finally:
        ws.close()
    ledger = Ledger.open(rundir.ledger)
    try:
        ledger.set_meta(
            run_id=rundir.run_id,
            task=task.name,
            task_path=str(task.path),
            repo=str(task.repo),
            workdir=task.workdir,
            base_commit=base,
            best_branch=best,
            metric=spec.metric.name,
            goal=spec.metric.goal,
            executor=task.executor,
            planner=task.planner,
            summarizer=task.summarizer,
            parallel=spec.run.parallel,
            trial_budget=spec.budget.trials,
            trial_minutes=spec.budget.trial_minutes,
            wall_hours=spec.budget.wall_hours,
            gpu_hours=spec.budget.gpu_hours,
            llm_usd=spec.budget.llm_usd,
            llm_tokens=spec.budget.llm_tokens,
            watch="",
            state="created",
            created_at=now,
            frozen=frozen,
            rule=Rule.of(spec).to_dict(),  # the decision settings, for readers without pydantic
            sandbox=_sandbox(spec),
        )
        ledger.event(now, "run-created", f"{task.name} at {base[:7]}")
    finally:
        ledger.close()
    return rundir


def _sandbox(spec: TaskSpec) -> dict[str, object]:
    """What this machine offers for [sandbox]; a job on another node reports its own (outcome)."""
    used, why = resolve(spec.sandbox.mode, spec.sandbox.bwrap)
    return {"mode": spec.sandbox.mode, "used": used, "why": why, "network": spec.sandbox.network}


def task_of(rundir: RunDir) -> Task:
    """The run's task rebuilt from its frozen copy and ledger, not from the (possibly changed) repo."""
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        meta = ledger.meta()
    finally:
        ledger.close()
    spec = read_spec(rundir.task_copy)
    planner, summarizer = meta.get("planner", "offline"), meta.get("summarizer", "rules")
    if not has_api_key():  # a resumed run without the key goes on without models
        planner = "offline" if planner == "anthropic" else planner
        summarizer = "rules" if summarizer == "anthropic" else summarizer
    return Task(
        spec=spec,
        path=Path(meta["task_path"]),
        repo=Path(meta["repo"]),
        workdir=meta["workdir"],
        surface=EditSurface.parse(spec.surface.allow, spec.surface.freeze, spec.surface.hidden),
        executor=meta["executor"],
        planner=planner,
        summarizer=summarizer,
    )


def open_run(
    rundir: RunDir,
    *,
    task: Task | None = None,
    planner: Planner | None = None,
    executor: Executor | None = None,
    summarizer: Summarizer | None = None,
    llm: LLM | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    echo: Echo = print,
) -> Controller:
    """Take the run's lock (a stale one is taken over) and build its controller from the ledger."""
    # The controller holds the planner's key in the environment it was started with, which
    # /proc/<pid>/environ shows to every process of the same user, trial code included.
    hide_own_environ()
    task = task or task_of(rundir)
    rundir.acquire()
    rundir.stop_path.unlink(missing_ok=True)  # a stopped run that is resumed goes on
    ledger = Ledger.open(rundir.ledger)
    meta = ledger.meta()
    spec = task.spec
    ws = _workspace(task, rundir)
    executor = executor or make_executor(task, rundir)
    default_planner, default_summarizer, llm = make_models(task, llm)
    planner = planner or default_planner
    summarizer = summarizer or default_summarizer
    source = (task.path.parent / spec.task.playbook).resolve() if spec.task.playbook else None
    playbook = Playbook.start(rundir.playbook, source, spec.playbook.persist)
    monitor = Monitor(
        tail_bytes=spec.monitor.tail_kb * 1024, stall_s=spec.monitor.stall_minutes * 60, clock=clock
    )
    fresh = meta.get("state") == "created"
    ledger.set_meta(
        state="running",
        executor=executor.name,
        planner=planner.name,
        summarizer=summarizer.name,
        parallel=executor.capacity,
        watch=executor.watch,
        host=socket.gethostname(),
        pid=os.getpid(),
        last_state=meta.get("state"),  # how it had ended: an ended run's `ara rerun` ends it so again
        last_reason=meta.get("end_reason", ""),
        last_ended_at=meta.get("ended_at"),  # an ended run's `ara rerun` keeps the run's own end
        end_reason="",
        ended_at=None,
    )
    ledger.event(
        clock(), "run-started" if fresh else "run-resumed", f"pid {os.getpid()} on {socket.gethostname()}"
    )
    controller = Controller(
        task,
        rundir,
        ledger,
        ws,
        planner,
        executor,
        meta["frozen"],
        summarizer=summarizer,
        llm=llm,
        playbook=playbook,
        monitor=monitor,
        clock=clock,
        sleep=sleep,
        echo=echo,
    )
    controller.log(
        f"run {rundir.run_id}: {task.name}, {executor.name} executor x{executor.capacity}, {planner.name} "
        f"planner, {summarizer.name} summarizer, {spec.budget.trials} trials of {spec.budget.steps} steps; "
        f"dir {rundir.path}" + ("" if fresh else " (resumed)")
    )
    return controller


class Collaborators(TypedDict, total=False):
    """What `launch` passes on to `open_run` (its keyword arguments but the task and the clock)."""

    planner: Planner | None
    executor: Executor | None
    summarizer: Summarizer | None
    llm: LLM | None
    sleep: Callable[[float], None]
    echo: Echo


def launch(
    task: Task, *, clock: Callable[[], float] = time.time, **collaborators: Unpack[Collaborators]
) -> Controller:
    """A new run of a validated task, with its controller ready to run here."""
    rundir = create_run(task, clock())
    return open_run(rundir, task=task, clock=clock, **collaborators)


def resumable(rundir: RunDir) -> str:
    """ "" when the run can be resumed, else why not."""
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        meta = ledger.meta()
    finally:
        ledger.close()
    state, reason = meta.get("state"), str(meta.get("end_reason") or "")
    # A failed baseline is the task's fault (fix it and submit again); any other failure was
    # ara's own (its disk, its ledger), and the ledger says where to carry on.
    if state == "finished" or (state == "failed" and reason.startswith("baseline")):
        return f"run {rundir.run_id} is {state}; nothing to resume"
    holder = rundir.lock_holder()
    if holder and rundir.holder_alive(holder) is not False:
        raise UsageError(
            f"run {rundir.run_id} is held by controller pid {holder.get('pid')} on "
            f"{holder.get('host')}; it is running (see `ara status {rundir.run_id}`)"
        )
    return ""
