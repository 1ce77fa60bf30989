"""Starting a run: the run directory, ledger, best branch and the collaborators the task asks for."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable

import tomli_w

from .controller import Controller, Echo
from .executors import Executor, LocalExecutor
from .executors.slurm import SlurmExecutor, slurm_parameters
from .ledger import Ledger
from .llm import LLM
from .monitor import Monitor
from .planners import OfflinePlanner, Planner
from .playbook import Playbook
from .rundir import RunDir, atomic_write_text, new_run_id
from .summarizer import ClaudeSummarizer, RuleSummarizer, Summarizer
from .task import Task, detect_gpus
from .workspace import Workspace


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
        )
    return LocalExecutor(
        capacity=spec.run.parallel,
        gpus_per_job=spec.resources.gpus_per_trial,
        gpu_ids=list(spec.resources.gpus) or detect_gpus(),
    )


def make_models(task: Task, llm: LLM | None) -> tuple[Planner, Summarizer, LLM | None]:
    """Planner and summarizer as resolved by the task; the Claude ones share one client."""
    from .planners.claude import ClaudePlanner

    spec = task.spec
    if llm is None and "anthropic" in (task.planner, task.summarizer):
        llm = LLM(spec.models)
    offline = OfflinePlanner(spec)
    planner: Planner = ClaudePlanner(llm, offline) if task.planner == "anthropic" and llm else offline
    summarizer: Summarizer = (
        ClaudeSummarizer(llm, spec) if task.summarizer == "anthropic" and llm else RuleSummarizer(spec)
    )
    return planner, summarizer, llm


def launch(
    task: Task,
    *,
    planner: Planner | None = None,
    executor: Executor | None = None,
    summarizer: Summarizer | None = None,
    llm: LLM | None = None,
    clock: Callable[[], float] = time.time,
    sleep: Callable[[float], None] = time.sleep,
    echo: Echo = print,
) -> Controller:
    """Create the run directory, ledger and best branch for a validated task; return its controller."""
    now = clock()
    rundir = RunDir.create(task.run_root, new_run_id(task.name, now))
    # The task as run (command-line overrides applied), readable by `ara report` and resume.
    header = f"# ara: the task as submitted from {task.path}\n"
    atomic_write_text(rundir.task_copy, header + tomli_w.dumps(task.data))
    rundir.acquire()
    ledger = Ledger.open(rundir.ledger)
    spec = task.spec
    ws = Workspace(
        task.repo,
        task.workdir,
        rundir.run_id,
        rundir.worktrees,
        task.surface,
        spec.surface.max_file_kb * 1024,
    )
    base = ws.head()
    frozen = ws.frozen_hashes(base)
    ws.start(base)
    executor = executor or make_executor(task, rundir)
    default_planner, default_summarizer, llm = make_models(task, llm)
    planner = planner or default_planner
    summarizer = summarizer or default_summarizer
    source = (task.path.parent / spec.task.playbook).resolve() if spec.task.playbook else None
    playbook = Playbook.start(rundir.playbook, source, spec.playbook.persist)
    monitor = Monitor(
        tail_bytes=spec.monitor.tail_kb * 1024, stall_s=spec.monitor.stall_minutes * 60, clock=clock
    )
    ledger.set_meta(
        run_id=rundir.run_id,
        task=task.name,
        task_path=str(task.path),
        repo=str(task.repo),
        workdir=task.workdir,
        base_commit=base,
        best_branch=ws.best_branch,
        metric=spec.metric.name,
        goal=spec.metric.goal,
        executor=executor.name,
        planner=planner.name,
        summarizer=summarizer.name,
        parallel=executor.capacity,
        trial_budget=spec.budget.trials,
        wall_hours=spec.budget.wall_hours,
        gpu_hours=spec.budget.gpu_hours,
        llm_usd=spec.budget.llm_usd,
        llm_tokens=spec.budget.llm_tokens,
        watch=executor.watch,
        state="running",
        created_at=now,
        host=socket.gethostname(),
        pid=os.getpid(),
        frozen=frozen,
    )
    ledger.event(now, "run-started", f"{task.name} at {base[:7]}")
    controller = Controller(
        task,
        rundir,
        ledger,
        ws,
        planner,
        executor,
        frozen,
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
        f"dir {rundir.path}"
    )
    return controller
