"""The playbook: the run's copy the planner reads, with learnings appended as trials are decided."""

from __future__ import annotations

import time
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .safetext import one_line

HEADING = "## Learnings"


def generic_playbook() -> str:
    return resources.files("slurm_autoresearch").joinpath("playbooks/generic.md").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Playbook:
    """`run_copy` lives in the run directory; with persist, learnings also reach the task's playbook."""

    run_copy: Path
    source: Path | None = None
    persist: bool = False
    initial: str = ""  # as the run began: what the planner reads (this run's learnings are in its history)

    @classmethod
    def start(cls, run_copy: Path, source: Path | None, persist: bool) -> Playbook:
        text = source.read_text(encoding="utf-8") if source and source.is_file() else generic_playbook()
        if run_copy.exists():
            text = run_copy.read_text(encoding="utf-8")
        else:
            run_copy.write_text(text, encoding="utf-8")
        return cls(run_copy, source if source and source.is_file() else None, persist, text)

    def text(self) -> str:
        try:
            return self.run_copy.read_text(encoding="utf-8")
        except FileNotFoundError:
            return ""

    def add(self, run_id: str, lines: list[str]) -> None:
        if not lines:
            return
        # A learning may quote a model or a log: one plain line, no escape sequence or markup trick.
        entry = "".join(f"- {run_id} {time.strftime('%Y-%m-%d')}: {one_line(line, 500)}\n" for line in lines)
        targets = [self.run_copy] + ([self.source] if self.persist and self.source else [])
        for path in targets:
            _append(path, entry)


def _append(path: Path, entry: str) -> None:
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    head = "" if not text or text.endswith("\n") else "\n"
    if HEADING not in text:
        head += f"\n{HEADING}\n"
    with path.open("a", encoding="utf-8", errors="backslashreplace") as fh:
        fh.write(head + entry)
