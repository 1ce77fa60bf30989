"""A task checked against this machine before a run starts: `load_task` and its checks.

task.py reads and validates the file and checks it against the repo; this adds what depends on
where ara runs: the commands on PATH, the executor (sbatch or not) and its options, GPUs, the
sandbox, the model key and prices, and the metric against what the probe saw.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import sys
import tomllib
from pathlib import Path

from pydantic import ValidationError

from ..errors import TaskError
from ..executors import sandbox
from ..spec import TaskSpec, format_validation_error, time_minutes
from ..surface import EditSurface, safe_relpath
from ..task import Task, apply_overrides, check_idea_edits, check_search, detect_gpus


def load_task(path: str | Path, overrides: list[str] | None = None) -> Task:
    """Read and validate a task file; every problem raises TaskError and creates nothing."""
    from ..workspace import Workspace, repo_toplevel

    task_path = Path(path).expanduser()
    source = str(path)
    if not task_path.is_file():
        raise TaskError(f"{source}: no such task file (create one with `ara init`)")
    try:
        data = tomllib.loads(task_path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"{source}: not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise TaskError(f"{source}: not UTF-8 text") from None
    apply_overrides(source, data, overrides or [])
    try:
        spec = TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise TaskError(format_validation_error(source, exc)) from None

    task_path = task_path.resolve()
    task_dir = task_path.parent
    if spec.task.repo is not None:
        repo_dir = (task_dir / spec.task.repo).resolve()
        repo = repo_toplevel(repo_dir) if repo_dir.is_dir() else None
        if repo is None:
            raise TaskError(
                f"{source}: [task] repo: {repo_dir} is not a git repository (run `git init` there)"
            )
    else:
        repo = repo_toplevel(task_dir)
        if repo is None:
            raise TaskError(f"{source}: [task] repo: {task_dir} is not inside a git repository; set repo")

    if spec.task.workdir is not None:
        try:
            workdir = "." if spec.task.workdir in (".", "") else safe_relpath(spec.task.workdir)
        except ValueError as exc:
            raise TaskError(f"{source}: [task] workdir: {exc}") from None
    elif task_dir.is_relative_to(repo):
        workdir = task_dir.relative_to(repo).as_posix() or "."
    else:
        workdir = "."
    if not (repo / workdir).is_dir():
        raise TaskError(f"{source}: [task] workdir: {workdir!r} is not a directory in {repo}")

    try:
        surface = EditSurface.parse(spec.surface.allow, spec.surface.freeze, spec.surface.hidden)
    except ValueError as exc:
        raise TaskError(f"{source}: [surface]: {exc}") from None

    _check_command(source, "command", spec.task.command, repo / workdir)
    if spec.task.eval:
        _check_command(source, "eval", spec.task.eval, repo / workdir)

    ws = Workspace(repo, workdir, "validate", Path("/nonexistent"), surface, spec.surface.max_file_kb * 1024)
    try:
        try:
            head = ws.head()
        except ValueError:
            raise TaskError(
                f"{source}: [task] repo: {repo} has no commits yet; commit your code first"
            ) from None
        tracked = ws.tracked_files(head)
        where = f"{workdir}/" if workdir != "." else repo.name
        for glob in surface.freeze:
            if not any(glob.matches(p) for p in tracked):
                key = "hidden" if glob in surface.hidden else "freeze"
                raise TaskError(
                    f"{source}: [surface] {key}: {glob.pattern!r} matches no committed file in {where}; "
                    "commit the file or fix the glob"
                )
        dirty = [p for p in ws.dirty_paths() if surface.is_allowed(p) or surface.is_frozen(p)]
        if dirty:
            shown = ", ".join(dirty[:5]) + (" ..." if len(dirty) > 5 else "")
            raise TaskError(
                f"{source}: uncommitted changes inside the edit surface: {shown}; "
                "commit or stash them (trials start from HEAD)"
            )
        check_search(source, spec, surface, ws, head, tracked)
        check_idea_edits(source, spec, surface, ws, head, tracked)
    finally:
        ws.close()
    from ..probe import task_problem  # the metric against what `ara init --probe` or `ara doctor` saw

    problem = task_problem(spec, task_path, repo / workdir)
    if problem:
        raise TaskError(f"{source}: {problem}")

    planner = _resolve_model_role(source, "planner", spec.run.planner, "offline")
    summarizer = _resolve_model_role(source, "summarizer", spec.run.summarizer, "rules")
    _check_prices(source, spec, {"planner": planner, "summarizer": summarizer})
    if spec.sandbox.mode == "bwrap":
        why = sandbox.probe(spec.sandbox.bwrap)
        if why:
            raise TaskError(f'{source}: [sandbox] mode = "bwrap": {why}; install it or set mode = "auto"')
    executor = _resolve_executor(source, spec)
    if executor == "slurm":
        _check_slurm(source, spec)
    else:
        _check_local_gpus(source, spec)
    return Task(
        spec=spec,
        path=task_path,
        repo=repo,
        workdir=workdir,
        surface=surface,
        executor=executor,
        planner=planner,
        summarizer=summarizer,
        data=data,
    )


def has_api_key() -> bool:
    return bool(os.environ.get("ANTHROPIC_API_KEY") or os.environ.get("ANTHROPIC_AUTH_TOKEN"))


def _resolve_model_role(source: str, role: str, choice: str, without: str) -> str:
    """`auto` is the Claude model where an API key is set, and `without` (no model) otherwise."""
    if choice == "anthropic" and not has_api_key():
        raise TaskError(
            f'{source}: [run] {role} = "anthropic" needs ANTHROPIC_API_KEY in the environment; '
            f'set it or use {role} = "{without}"'
        )
    if choice == "auto":
        return "anthropic" if has_api_key() else without
    return choice


def _check_prices(source: str, spec: TaskSpec, task_roles: dict[str, str]) -> None:
    from ..llm import price

    for role, resolved in task_roles.items():
        model = getattr(spec.models, role)
        if resolved == "anthropic" and price(spec.models, model) is None:
            raise TaskError(
                f'{source}: [models] {role} = "{model}" has no known price; add '
                f'[models.prices."{model}"] with input and output dollars per million tokens'
            )


def _resolve_executor(source: str, spec: TaskSpec) -> str:
    """`auto` is Slurm where sbatch is on PATH, local processes otherwise."""
    has_sbatch = shutil.which("sbatch") is not None
    if spec.run.executor == "slurm" and not has_sbatch:
        raise TaskError(
            f'{source}: [run] executor = "slurm" but sbatch is not on PATH; '
            'load Slurm or use executor = "local"'
        )
    if spec.run.executor == "auto":
        return "slurm" if has_sbatch else "local"
    return spec.run.executor


def executor_reason(task: Task) -> str:
    """One line: which executor runs the trials and why, so `auto` never surprises."""
    chosen = task.spec.run.executor
    if chosen != "auto":
        return f'executor: {task.executor} ([run] executor = "{chosen}")'
    if task.executor == "slurm":
        return (
            f"executor: slurm (auto: sbatch is on PATH at {shutil.which('sbatch')}; "
            'set [run] executor = "local" to run trials on this machine)'
        )
    return (
        "executor: local (auto: no sbatch on PATH; trials run as processes on this machine, "
        f"{os.cpu_count() or 1} cores)"
    )


def _check_slurm(source: str, spec: TaskSpec) -> None:
    from ..executors.sbatch import sbatch_test_only, slurm_parameters

    slurm, gpus = spec.slurm, spec.resources.gpus_per_trial
    if slurm.gres is not None and slurm.gres.startswith("gpu") and int(slurm.gres.rsplit(":", 1)[1]) != gpus:
        raise TaskError(
            f"{source}: [slurm] gres {slurm.gres!r} asks for a different GPU count than "
            f"[resources] gpus_per_trial = {gpus}; make them agree"
        )
    if slurm.gpus_per_node is not None and slurm.gpus_per_node != gpus:
        raise TaskError(
            f"{source}: [slurm] gpus_per_node = {slurm.gpus_per_node} differs from "
            f"[resources] gpus_per_trial = {gpus}; make them agree"
        )
    if slurm.time is not None and time_minutes(slurm.time) <= spec.budget.trial_minutes:
        raise TaskError(
            f"{source}: [slurm] time ({time_minutes(slurm.time)} min) must exceed [budget] "
            f"trial_minutes ({spec.budget.trial_minutes:g}) so ara stops a trial before Slurm kills it"
        )
    problem = sbatch_test_only(slurm_parameters(spec, job_name=f"ara-check-{spec.task.name}", capacity=1))
    if problem:
        raise TaskError(f"{source}: [slurm]: sbatch --test-only rejects these options: {problem}")


def _check_local_gpus(source: str, spec: TaskSpec) -> None:
    res = spec.resources
    if res.gpus_per_trial == 0:
        return
    gpus = res.gpus or detect_gpus()
    needed = res.gpus_per_trial * spec.run.parallel
    if len(gpus) < needed:
        raise TaskError(
            f"{source}: [resources] {spec.run.parallel} parallel trials x {res.gpus_per_trial} GPUs need "
            f"{needed} GPUs, {len(gpus)} found; lower run.parallel or list device ids in resources.gpus"
        )


# -- commands ------------------------------------------------------------------------------------

_SHELL_BUILTINS = {"cd", "export", "source", ".", "set", "exec", "eval", "true", ":", "ulimit", "umask"}


def _first_program(command: str) -> str | None:
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    for word in words:
        if re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):  # VAR=value prefix
            continue
        return word
    return None


def _check_command(source: str, key: str, command: str, cwd: Path) -> None:
    try:
        shlex.split(command)
    except ValueError as exc:
        raise TaskError(f"{source}: [task] {key}: cannot parse {command!r} ({exc})") from None
    program = _first_program(command)
    if program is None or program in _SHELL_BUILTINS:
        return
    if "/" in program:
        found = (cwd / program).exists()
    else:
        # `python` in a command means the interpreter running ara unless PATH says otherwise.
        path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
        found = shutil.which(program, path=path) is not None
    if not found:
        raise TaskError(
            f"{source}: [task] {key}: command not found: {program!r} (install it or fix the command)"
        )
    script = _script_of(command)
    if script and not (cwd / script).is_file():
        raise TaskError(
            f"{source}: [task] {key}: {program} would run {script!r}, which is not in {cwd} "
            "(a misspelt name fails every trial with the real cause only in its log)"
        )


_INTERPRETERS = re.compile(r"^(python[\d.]*|bash|sh|Rscript|julia|perl|ruby|node)$")


def _script_of(command: str) -> str | None:
    """The script an interpreter is asked to run first (`python train.py`), if the command says."""
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    while words and "=" in words[0] and not words[0].startswith(("-", "/", ".")):
        words = words[1:]  # VAR=value before the program
    if len(words) < 2 or not _INTERPRETERS.match(Path(words[0]).name):
        return None
    skip = False
    for word in words[1:]:
        if skip:
            skip = False
            continue
        if word in ("-m", "-c", "-e", "--eval", "-") or word in ("&&", "||", ";", "|"):
            return None  # a module, inline code or stdin: nothing to look for
        if word in ("-W", "-X", "--check-hash-based-pycs"):
            skip = True  # options that take a value
            continue
        if not word.startswith("-"):
            script = word.rstrip(";&|")
            return None if "$" in script or "*" in script else script
    return None
