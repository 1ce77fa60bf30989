"""A task's own probe (`ara doctor`) and its metric check (`ara submit --check`)."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from .findings import Findings, conclude
from .folder import code_hash
from .run import Setup, run_probe
from .verdict import metric_problem, read_findings, verdicts, write_findings


def read_task(path: Path) -> tuple[Any, Path, Path]:
    """(spec, workdir, run root) of a task file, schema-checked only: `ara doctor` looks at a task
    that may not pass `--check` yet."""
    from pydantic import ValidationError

    from ..errors import TaskError
    from ..spec import TaskSpec, format_validation_error
    from ..workspace import repo_toplevel

    try:
        spec = TaskSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise TaskError(f"{path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise TaskError(format_validation_error(str(path), exc)) from None
    task_dir = path.resolve().parent
    repo = (task_dir / spec.task.repo).resolve() if spec.task.repo else repo_toplevel(task_dir) or task_dir
    workdir = (repo / spec.task.workdir).resolve() if spec.task.workdir else task_dir
    if not workdir.is_dir():
        raise TaskError(f"{path}: [task] workdir: {workdir} is not a directory")
    return spec, workdir, task_dir / spec.run.root


def task_setup(spec: Any, steps: int, timeout_s: float) -> Setup:
    """The probe of a task as its trials run: its command, evaluation, metric, environment, room."""
    return Setup(
        command=spec.task.command,
        eval=spec.task.eval,
        metric=spec.metric.name,
        pattern=spec.metric.pattern,
        steps=steps,
        timeout_s=timeout_s,
        sandbox=spec.sandbox.mode,
        bwrap=spec.sandbox.bwrap,
        network=spec.sandbox.network,
        hide=spec.sandbox.hide,
        writable=list(spec.sandbox.writable),
        env=dict(spec.task.env),
        pass_env=list(spec.task.pass_env),
        gpus=spec.resources.gpus_per_trial,
        cpus=spec.resources.cpus_per_trial,
    )


def doctor(
    spec: Any, workdir: Path, root: Path, *, steps: int, timeout_s: float, echo: Any = None
) -> tuple[Findings, list[tuple[str, str]]]:
    """Probe a task's command and say, per finding, whether the task fits what the code does."""
    from ..surface import EditSurface

    findings = run_probe(workdir, task_setup(spec, steps, timeout_s), echo=echo)
    conclude(findings, wanted=spec.metric.name, pattern=spec.metric.pattern)
    found = verdicts(findings, spec.budget.steps, spec.budget.trial_minutes)
    problem = metric_problem(
        findings.to_dict(),
        spec.task.command,
        spec.task.eval,
        spec.metric.name,
        spec.metric.pattern,
        findings.code,
    )
    if problem:
        found = [v for v in found if not v[1].startswith("metric ")]
        found.insert(0, ("FAIL", problem))
    # The generic lines about files and configs become lines about this task's surface and search.
    generic = ("read and never written", "read only by", f"{(findings.config or {}).get('file')}: ")
    found = [v for v in found if not v[1].startswith(generic)]
    surface = EditSurface.parse(spec.surface.allow, spec.surface.freeze, spec.surface.hidden)
    loose = [rel for rel in findings.freeze if not surface.is_frozen(rel)]
    if loose:
        found.append(("WARN", f"read and never written, but not in [surface] freeze: {', '.join(loose)}"))
    elif findings.freeze:
        found.append(("ok", f"frozen, and read and never written: {', '.join(findings.freeze)}"))
    unseen = [rel for rel in findings.hidden if not surface.is_hidden(rel)]
    if unseen:
        found.append(("note", f"read only by the evaluation, not [surface] hidden: {', '.join(unseen)}"))
    elif findings.hidden:
        found.append(("ok", f"hidden, and read only by the evaluation: {', '.join(findings.hidden)}"))
    if findings.config and not spec.search.config:
        space = len(findings.config["space"])
        found.append(
            ("note", f"{findings.config['file']} has {space} values for a [search.space]; none is set")
        )
    write_findings(root, findings)
    return findings, found


def task_problem(spec: Any, task_path: Path, workdir: Path) -> str | None:
    """`--check`: the task's metric against what the latest probe of the same command saw."""
    data = read_findings(task_path.parent / spec.run.root)
    if data is None:
        return None
    return metric_problem(
        data, spec.task.command, spec.task.eval, spec.metric.name, spec.metric.pattern, code_hash(workdir)
    )
