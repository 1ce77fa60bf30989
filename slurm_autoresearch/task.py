"""TaskSpec: task.toml read with tomllib, validated with pydantic, then checked against the repo."""

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
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import TaskError
from .surface import EditSurface, safe_relpath

Scalar = str | int | float | bool
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TaskSection(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    description: str = ""
    repo: str | None = None
    workdir: str | None = None
    command: Annotated[str, Field(min_length=1)]
    eval: str | None = None
    playbook: str | None = None


class MetricSection(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]+$")]
    goal: Literal["min", "max"]
    min_delta: Annotated[float, Field(ge=0)] = 0.0


class BudgetSection(_Section):
    steps: PositiveInt
    trials: PositiveInt = 20
    trial_minutes: PositiveFloat = 10.0
    wall_hours: PositiveFloat | None = None
    gpu_hours: PositiveFloat | None = None
    crash_limit: PositiveInt = 5


class RunSection(_Section):
    executor: Literal["auto", "local", "slurm"] = "auto"
    planner: Literal["auto", "offline"] = "auto"
    parallel: PositiveInt = 1
    root: str = ".ara"
    poll_seconds: PositiveFloat = 2.0


class ResourcesSection(_Section):
    gpus_per_trial: Annotated[int, Field(ge=0)] = 0
    cpus_per_trial: PositiveInt = 1
    gpus: list[Annotated[int, Field(ge=0)]] = []


class SlurmSection(_Section):
    """sbatch options under Slurm's own names (underscores for dashes)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: Annotated[int, Field(gt=0)] | str | None = None
    gres: str | None = None
    gpus_per_node: PositiveInt | None = None
    cpus_per_task: PositiveInt | None = None
    mem: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    setup: list[str] = []
    additional: dict[str, str | int | bool] = {}
    wckey: str | None = None
    signal_delay_s: Annotated[int, Field(ge=0)] | None = None
    python: str | None = None
    use_srun: bool = True
    poll_seconds: PositiveFloat = 5.0  # one sacct call per this interval, however many jobs

    @model_validator(mode="after")
    def _shape(self) -> SlurmSection:
        from .executors.sacct import time_minutes

        if self.time is not None:
            time_minutes(self.time)  # ValueError names the format
        if self.gres is not None and self.gpus_per_node is not None:
            raise ValueError("set either 'gres' or 'gpus_per_node', not both")
        if self.gres is not None and not re.fullmatch(r"[A-Za-z0-9_-]+(:[A-Za-z0-9_.-]+)?:\d+", self.gres):
            raise ValueError(f"gres {self.gres!r} is not name[:type]:count, e.g. gpu:a100:1")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?B?", self.mem.upper()):
            raise ValueError(f"mem {self.mem!r} is not a size such as 16G or 4000M")
        return self


class PlannerSection(_Section):
    seed: int = 0


class SurfaceSection(_Section):
    allow: Annotated[list[str], Field(min_length=1)]
    freeze: list[str] = []
    max_file_kb: PositiveInt = 256


class ParamSpec(_Section):
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: Annotated[int | float, Field(gt=0)] | None = None
    choices: list[Scalar] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either a non-empty 'choices' list or 'low' and 'high'")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give either a non-empty 'choices' list or 'low' and 'high'")
        if self.low >= self.high:
            raise ValueError(f"'low' ({self.low}) must be below 'high' ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs 'low' > 0")
        return self

    @property
    def is_int(self) -> bool:
        """An integer range: both bounds (and the step, if any) written as integers in the TOML."""
        return all(isinstance(v, int) for v in (self.low, self.high)) and (
            self.step is None or isinstance(self.step, int)
        )


class SearchSection(_Section):
    config: str | None = None
    startup_trials: PositiveInt = 4
    space: dict[str, ParamSpec] = {}

    @model_validator(mode="after")
    def _config_needed(self) -> SearchSection:
        if self.space and not self.config:
            raise ValueError("a search space needs 'config', the TOML file its keys live in")
        return self


class EditSpec(_Section):
    path: str
    search: str
    replace: str


class IdeaSpec(_Section):
    title: Annotated[str, Field(min_length=1)]
    rationale: str = ""
    config: dict[str, Scalar] = {}
    edits: list[EditSpec] = []

    @model_validator(mode="after")
    def _has_change(self) -> IdeaSpec:
        if not self.config and not self.edits:
            raise ValueError("an idea needs 'config' values or 'edits'")
        return self


class TaskSpec(_Section):
    task: TaskSection
    metric: MetricSection
    budget: BudgetSection
    surface: SurfaceSection
    run: RunSection = RunSection()
    resources: ResourcesSection = ResourcesSection()
    planner: PlannerSection = PlannerSection()
    slurm: SlurmSection = SlurmSection()
    search: SearchSection = SearchSection()
    ideas: list[IdeaSpec] = []


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
    data: dict[str, Any] = dataclasses.field(default_factory=dict)  # the TOML as read, overrides applied

    @property
    def name(self) -> str:
        return self.spec.task.name

    @property
    def run_root(self) -> Path:
        return (self.path.parent / self.spec.run.root).resolve()


# -- error formatting -----------------------------------------------------------------------


def _section_of(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """Human location of a pydantic error and the model that owns its last key."""
    owner: type[BaseModel] | None = model
    parts: list[str] = []
    for item in loc[:-1]:
        if isinstance(item, int):
            parts.append(f"#{item + 1}")
            continue
        field = owner.model_fields.get(item) if owner else None
        parts.append(str(item))
        owner = _model_in(field.annotation) if field else None
    where = ".".join(parts).replace(".#", " #")
    return (f"[{where}]" if where else "top level"), owner


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found:
            return found
    return None


def format_validation_error(source: str, exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    kind = first["type"]
    if loc and isinstance(loc[-1], int):  # a whole item of a list failed, e.g. one [[ideas]] table
        loc = (*loc, "")
    where, owner = _section_of(TaskSpec, loc)
    key = loc[-1] if loc else ""
    if kind == "extra_forbidden" and owner is not None:
        valid = ", ".join(owner.model_fields)
        msg = f"unknown key {key!r} in {where}; valid keys: {valid}"
    elif kind == "missing":
        msg = f"missing key {key!r} in {where}"
    else:
        found = first.get("input")
        expected = re.sub(r"^(Input should be|Value error,)\s*", "", first["msg"])
        label = f"{where} {key}" if key else where
        if kind.startswith(("model_", "dict_")) or kind == "value_error":
            msg = f"{label}: {expected}"
        else:
            msg = f"{label}: found {found!r}, expected {expected}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{source}: {msg}{more}"


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
        surface = EditSurface.parse(spec.surface.allow, spec.surface.freeze)
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
                raise TaskError(
                    f"{source}: [surface] freeze: {glob.pattern!r} matches no committed file in {where}; "
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
    finally:
        ws.close()

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
        planner="offline",  # the Claude planner arrives with its own issue; auto means offline until then
        data=data,
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
