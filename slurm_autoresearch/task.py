"""Task: task.toml read with tomllib, validated as a TaskSpec, then checked against the repo and cluster."""

from __future__ import annotations

import dataclasses
import os
import re
import shlex
import shutil
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import TaskError
from .executors import sandbox
from .spec import TaskSpec, format_validation_error
from .surface import EditSurface, safe_relpath


@dataclass(frozen=True)
class Task:
    """A validated task with its paths resolved against the filesystem and the repo."""

    spec: TaskSpec
    path: Path
    repo: Path
    workdir: str
    surface: EditSurface
    executor: str
    planner: str
    summarizer: str = "rules"
    data: dict[str, Any] = dataclasses.field(default_factory=dict)  # the TOML as read, overrides applied

    def warnings(self) -> list[str]:
        """What is allowed but probably not meant: said by `ara submit` and `--check`."""
        res, cores = self.spec.resources, os.cpu_count() or 1
        found = []
        if self.executor == "local" and self.spec.run.parallel * res.cpus_per_trial > cores:
            found.append(
                f"[run] parallel {self.spec.run.parallel} x [resources] cpus_per_trial "
                f"{res.cpus_per_trial} > {cores} cores here: trials will share cores and run slower"
            )
        return found

    @property
    def name(self) -> str:
        return self.spec.task.name

    @property
    def run_root(self) -> Path:
        return (self.path.parent / self.spec.run.root).resolve()


# -- loading --------------------------------------------------------------------------------

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


def read_spec(path: Path) -> TaskSpec:
    """The spec of a run's frozen task.toml copy, without the checks against the repo."""
    try:
        return TaskSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise TaskError(f"{path}: cannot read the run's task copy: {exc}") from None
    except ValidationError as exc:
        raise TaskError(format_validation_error(str(path), exc)) from None


def apply_overrides(source: str, data: dict[str, Any], overrides: list[str]) -> None:
    """`section.key=value` settings from the command line; values are TOML (strings may be bare)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        parts = [p.strip() for p in key.split(".")]
        if not sep or len(parts) < 2 or not all(parts):
            raise TaskError(f"--set {item!r}: expected section.key=value, e.g. run.parallel=4")
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw  # a bare word: slurm.partition=gpu
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise TaskError(f"{source}: --set {item!r}: {part!r} is not a table")
        node[parts[-1]] = value


def load_task(path: str | Path, overrides: list[str] | None = None) -> Task:
    """Read and validate a task file; every problem raises TaskError and creates nothing."""
    from .workspace import Workspace, repo_toplevel

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
        _check_search(source, spec, surface, ws, head, tracked)
        _check_idea_edits(source, spec, surface, ws, head, tracked)
    finally:
        ws.close()
    from .probe import task_problem  # the metric against what `ara init --probe` or `ara doctor` saw

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
    from .llm import price

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
    from .executors.sacct import time_minutes
    from .executors.slurm import sbatch_test_only, slurm_parameters

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


def _check_search(
    source: str, spec: TaskSpec, surface: EditSurface, ws: Any, head: str, tracked: list[str]
) -> None:
    search = spec.search
    if not search.config:
        for idea in spec.ideas:
            if idea.config:
                raise TaskError(
                    f"{source}: [[ideas]] {idea.title!r} sets config values but [search] config is not set"
                )
        return
    try:
        rel = safe_relpath(search.config)
    except ValueError as exc:
        raise TaskError(f"{source}: [search] config: {exc}") from None
    if rel not in tracked:
        raise TaskError(f"{source}: [search] config: {rel!r} is not a committed file in the workdir")
    if surface.violation(rel):
        raise TaskError(f"{source}: [search] config: {surface.violation(rel)}; add it to [surface] allow")
    try:
        config = tomllib.loads(ws.read_text(head, rel))
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"{source}: [search] config: {rel} is not valid TOML: {exc}") from None
    from .config_file import lookup

    for key in search.space:
        if lookup(config, key) is None:
            raise TaskError(f"{source}: [search.space] {key!r} is not a key of {rel}")
    for idea in spec.ideas:
        for key in idea.config:
            if lookup(config, key) is None:
                raise TaskError(f"{source}: [[ideas]] {idea.title!r}: {key!r} is not a key of {rel}")


def _check_idea_edits(
    source: str, spec: TaskSpec, surface: EditSurface, ws: Any, head: str, tracked: list[str]
) -> None:
    """Every [[ideas]] edit applies to the committed code under the trials' edit rule.

    Caught here, a search block copied with the wrong indent is one line at submit time instead of
    a rejected trial (or, under a looser rule, a trial that crashes with an IndentationError).
    """
    from .hypothesis import whole_line_problem

    for idea in spec.ideas:
        files: dict[str, str] = {}
        for n, edit in enumerate(idea.edits, 1):
            where = f"{source}: [[ideas]] {idea.title!r}, edit {n} ({edit.path})"
            try:
                rel = safe_relpath(edit.path)
            except ValueError as exc:
                raise TaskError(f"{where}: {exc}") from None
            if surface.violation(rel):
                raise TaskError(f"{where}: {surface.violation(rel)}")
            if rel not in files:
                files[rel] = ws.read_text(head, rel) if rel in tracked else ""
            if edit.search == "":
                if rel in tracked:
                    raise TaskError(f"{where}: empty search text creates a file, but {rel} exists")
                files[rel] = edit.replace
                continue
            if rel not in tracked and not files[rel]:
                raise TaskError(f"{where}: {rel} is not a committed file")
            problem = whole_line_problem(files[rel], edit.search)
            if problem:
                raise TaskError(f"{where}: {problem}")
            files[rel] = files[rel].replace(edit.search, edit.replace, 1)


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


def detect_gpus() -> list[int]:
    """GPU ids the local machine offers: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(x) for x in visible.split(",") if x.strip().isdigit()]
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    import subprocess

    try:
        out = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [i for i, line in enumerate(out.splitlines()) if line.startswith("GPU ")]
