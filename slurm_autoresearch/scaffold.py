"""`ara init`: a task.toml and playbook.md guessed from the files next to the training code."""

from __future__ import annotations

import json
import re
from importlib import resources
from pathlib import Path

from .errors import UsageError

_EVAL_NAMES = ("evaluate.py", "eval.py")
_FROZEN_NAMES = ("evaluate.py", "eval.py", "prepare.py", "data.py")
_CONFIG_GLOBS = ("*.toml", "*.yaml", "*.yml", "*.json")


def _template(name: str) -> str:
    return resources.files("slurm_autoresearch").joinpath(name).read_text(encoding="utf-8")


def write_scaffold(
    directory: Path, *, name: str | None, command: str | None, metric: str, goal: str, force: bool
) -> list[Path]:
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    task_path = directory / "task.toml"
    if task_path.exists() and not force:
        raise UsageError(f"{task_path} exists; edit it, or pass --force to overwrite it")
    here = directory.resolve()
    name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", here.name).strip("-.") or "task"
    files = {p.name for p in here.iterdir() if p.is_file()}
    if command is None:
        command = (
            "python train.py"
            if "train.py" in files or not any(f.endswith(".py") for f in files)
            else f"python {sorted(f for f in files if f.endswith('.py'))[0]}"
        )
    script = command.split()[-1] if command.split()[-1].endswith(".py") else "train.py"
    configs = sorted({p.name for g in _CONFIG_GLOBS for p in here.glob(g)} - {"task.toml", "pyproject.toml"})
    allow = [script, *configs]
    freeze = [f for f in _FROZEN_NAMES if f in files and f != script]
    evaluator = next((f for f in _EVAL_NAMES if f in files), None)
    eval_line = (
        f'eval = "python {evaluator}"         # the frozen evaluation, run after the command'
        if evaluator
        else '# eval = "python evaluate.py"  # a frozen evaluation run after the command, if you have one'
    )
    text = _template("templates/task.toml").format(
        name=name,
        description=f"Improve {metric} of the model trained by {script}.",
        command=command,
        eval_line=eval_line,
        metric=metric,
        goal=goal,
        allow=json.dumps(allow),
        freeze=json.dumps(freeze),
    )
    task_path.write_text(text, encoding="utf-8")
    written = [task_path]
    playbook = directory / "playbook.md"
    if not playbook.exists():
        playbook.write_text(_template("playbooks/generic.md"), encoding="utf-8")
        written.append(playbook)
    return written
