"""What the probe saw (probe.json's content), and the metric a task should name from it."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from .output import guess_goal, metric_choices

SCHEMA = 1


@dataclass
class Findings:
    """What the probe saw; probe.json holds it, task.toml's comments and the verdicts say it."""

    command: str
    eval: str | None
    directory: str
    code: str
    steps: list[int]
    sandbox: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # read as ara reads them (seed 0)
    source: str = ""
    printed: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: dict[str, Any] | None = None  # name, pattern, goal, goal_sure, value, source
    seed_changes_result: bool | None = None
    repeats_identical: bool | None = None
    stops_at_steps: bool | None = None
    steps_evidence: str = ""
    reads_ara_steps: bool = False
    seconds_per_step: float | None = None
    seconds_per_step_at_most: float | None = None
    startup_seconds: float | None = None
    reads: list[str] | None = None
    read_by_eval_only: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None  # file, space, left_out
    failure: str = ""
    stream: str = ""  # the seed-0 run's metric stream, bounded: what `--check` reads a pattern against
    probed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    @property
    def ok(self) -> bool:
        return not self.failure


def conclude(findings: Findings, wanted: str | None = None, pattern: str | None = None) -> None:
    """The metric the task should name: the one asked for (with its pattern), else the best seen;
    a pattern counts only when it reads back the value it was made from."""
    from ..metrics import pattern_metric

    findings.metric = None
    if pattern and wanted:
        value = findings.metrics.get(wanted)
        findings.metric = {"name": wanted, "pattern": pattern, "value": value, "source": "[metric] pattern"}
    choices = [] if findings.metric else metric_choices(findings.metrics, findings.printed, wanted)
    for name, found in choices:
        if found is None:
            findings.metric = {
                "name": name,
                "pattern": None,
                "value": findings.metrics[name],
                "source": findings.source,
            }
            break
        printed = findings.printed[name]
        if pattern_metric(findings.stream, found) == printed["value"]:
            source = f"printed as `{printed['line']}`"
            findings.metric = {"name": name, "pattern": found, "value": printed["value"], "source": source}
            break
    if findings.metric is None and wanted:
        findings.metric = {"name": wanted, "pattern": None, "value": None, "source": "not seen"}
    if findings.metric is not None:
        goal, sure = guess_goal(findings.metric["name"])
        findings.metric.update(goal=goal, goal_sure=sure)
