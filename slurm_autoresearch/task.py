"""Task: task.toml read with tomllib, validated as a TaskSpec, its overrides, and its checks against the repo.

What depends on the machine ara runs on (PATH, sbatch, GPUs, the sandbox, the probe's findings) is
checked in loop/preflight.py, whose `load_task` makes a Task.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .errors import TaskError
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


# -- reading and checking against the repo -----------------------------------------------


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


def check_search(
    source: str, spec: TaskSpec, surface: EditSurface, ws: Any, head: str, tracked: list[str]
) -> None:
    """[search] config is a committed, editable TOML file holding every searched and [[ideas]] key."""
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


def check_idea_edits(
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


def detect_gpus() -> list[int]:
    """GPU ids the local machine offers: CUDA_VISIBLE_DEVICES when set, else nvidia-smi's list.

    A fact about this machine, yet here rather than in loop/preflight.py: the probe asks it too.
    """
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
