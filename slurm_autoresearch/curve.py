"""Learning curves from training logs, and early stopping: divergence, or clearly behind the
incumbent's curve at the same step."""

from __future__ import annotations

import itertools
import json
import math
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .rundir import atomic_write_text

if TYPE_CHECKING:
    from .spec import TaskSpec

CURVE_FILE = "curve.json"
READ_LIMIT = 256 * 1024  # bytes read per look; a log that grew more than this loses older points
MAX_POINTS = 2000  # kept per curve; denser curves are thinned by halves
END_READ_LIMIT = 2 << 20  # bytes of a finished log read for its digest: the first and last MiB
_NUMBER = r"([-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|\.\d+(?:[eE][-+]?\d+)?|nan|inf(?:inity)?))"
_STEP = re.compile(r"\bstep[\s=:]+(\d+)", re.I)

Point = tuple[int, float]


def progress_pattern(metric: str) -> re.Pattern[str]:
    """`<metric> 0.61`, `<metric>=0.61` or `<metric>: 0.61` on a line that also names its step."""
    return re.compile(rf"(?<![\w.]){re.escape(metric)}[\s=:]+{_NUMBER}(?![\w.])", re.I)


def parse_points(text: str, pattern: re.Pattern[str]) -> list[Point]:
    return parse_series(text, [pattern])[0]


def parse_series(text: str, patterns: list[re.Pattern[str]]) -> list[list[Point]]:
    """One curve per pattern from the same progress lines, in one pass over the text (ara's own
    `[ara]` notes are not the training's)."""
    series: list[list[Point]] = [[] for _ in patterns]
    for line in text.splitlines():
        step = _STEP.search(line)
        if not step or line.startswith("[ara] "):
            continue
        for points, pattern in zip(series, patterns, strict=True):
            value = pattern.search(line)
            if value:
                points.append((int(step.group(1)), float(value.group(1))))
    return series


def last_run(points: list[Point]) -> list[Point]:
    """The points after the last time the step went back (a retried or requeued job's log holds
    every attempt; only the last one's curve is the trial's)."""
    start = 0
    for i in range(1, len(points)):
        if points[i][0] < points[i - 1][0]:
            start = i
    return points[start:]


def read_ends(log: Path, limit: int = END_READ_LIMIT) -> str:
    """A finished log's text, at most `limit` bytes: all of it, or its first and last halves (the
    start of a curve and its end; the middle of a huge log is skipped, cut at whole lines)."""
    try:
        with log.open("rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(0)
            if size <= limit:
                return fh.read().decode("utf-8", errors="replace")
            head = fh.read(limit // 2)
            fh.seek(size - limit // 2)
            tail = fh.read(limit // 2)
    except OSError:
        return ""
    head = head[: head.rfind(b"\n") + 1]
    tail = tail[tail.find(b"\n") + 1 :]
    return (head + tail).decode("utf-8", errors="replace")


def finished(log: Path, names: list[str]) -> list[list[Point]]:
    """The curves of a finished job's log, one per name ("" reads none), from a bounded read,
    each of the job's last attempt."""
    wanted = [name for name in names if name]
    found = iter(parse_series(read_ends(log), [progress_pattern(n) for n in wanted]) if wanted else [])
    return [last_run(next(found)) if name else [] for name in names]


def at(curve: list[Point], step: int) -> float | None:
    """The curve's value at a step, linear between reported points; None outside its range."""
    if not curve or step < curve[0][0] or step > curve[-1][0]:
        return None
    for (s0, v0), (s1, v1) in itertools.pairwise(curve):
        if s0 <= step <= s1:
            return v0 if s1 == s0 else v0 + (v1 - v0) * (step - s0) / (s1 - s0)
    return curve[-1][1]


def save(trial_dir: Path, curve: list[Point]) -> None:
    if curve:
        atomic_write_text(trial_dir / CURVE_FILE, json.dumps(curve))


def load(trial_dir: Path) -> list[Point]:
    try:
        return [(int(s), float(v)) for s, v in json.loads((trial_dir / CURVE_FILE).read_text())]
    except (OSError, ValueError, TypeError):
        return []


@dataclass
class _Reader:
    offset: int = 0
    partial: str = ""
    points: list[Point] = field(default_factory=list)
    behind: int = 0  # reports in a row clearly behind the incumbent


@dataclass
class Stop:
    """Why a running trial should be cancelled now."""

    reason: str
    diverged: bool  # a failure (crash); otherwise it lost the race (discard)


@dataclass
class Curves:
    """Reads each running trial's new log lines (bounded per look) into its curve, and judges it."""

    metric: str
    goal: str  # "max" | "min"
    after: float = 0.25
    behind: float | None = None
    sd: float = 3.0
    patience: int = 3
    diverge: float = 4.0
    _readers: dict[str, _Reader] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._pattern = progress_pattern(self.metric)

    @classmethod
    def of(cls, spec: TaskSpec) -> Curves | None:
        """The task's [early_stop] as a curve reader and judge; None when it reads no curves."""
        stop = spec.early_stop
        if not stop.metric:
            return None
        return cls(
            stop.metric,
            spec.early_stop_goal,
            after=stop.after,
            behind=stop.behind,
            sd=stop.sd,
            patience=stop.patience,
            diverge=stop.diverge,
        )

    def read(self, trial_id: str, log: Path, limit: int = READ_LIMIT) -> list[Point]:
        """Points written since the last read (at most `limit` bytes of them), appended to the curve."""
        reader = self._readers.setdefault(trial_id, _Reader())
        try:
            with log.open("rb") as fh:
                size = fh.seek(0, 2)
                if size < reader.offset:  # a retry started the log again
                    reader.offset, reader.partial = 0, ""
                start = max(reader.offset, size - limit)
                if start > reader.offset:
                    reader.partial = ""
                fh.seek(start)
                data = fh.read(size - start)
        except FileNotFoundError:
            return []
        reader.offset = start + len(data)
        text = reader.partial + data.decode("utf-8", errors="replace")
        text, _, reader.partial = text.rpartition("\n") if "\n" in text else ("", "", text)
        new = parse_points(text, self._pattern)
        for i, (step, _) in enumerate(new):
            if reader.points and step < reader.points[-1][0]:
                # The step went back: a retried or requeued job started training again.
                reader.points, reader.behind, new = [], 0, new[i:]
                break
        reader.points.extend(new)
        if len(reader.points) > MAX_POINTS:
            reader.points = reader.points[::2]
        return new

    def curve(self, trial_id: str) -> list[Point]:
        reader = self._readers.get(trial_id)
        return reader.points if reader else []

    def forget(self, trial_id: str) -> None:
        self._readers.pop(trial_id, None)

    def judge(
        self, trial_id: str, new: list[Point], steps: int, references: list[list[Point]]
    ) -> Stop | None:
        """Divergence at any point; behind the incumbent's curves (runs of its commit at the same step
        budget) by more than the margin for `patience` reports in a row, once `after` of the steps
        are done."""
        reader = self._readers[trial_id]
        earlier = [v for _, v in reader.points[: len(reader.points) - len(new)] if math.isfinite(v)]
        best = min(earlier, default=None)
        for step, value in new:
            if not math.isfinite(value):
                return Stop(f"diverged: {self.metric} is {value} at step {step}", True)
            if (
                self.goal == "min"
                and self.diverge
                and best is not None
                and best > 0
                and value > self.diverge * best
            ):
                return Stop(
                    f"diverged: {self.metric} {value:.4g} at step {step}, over {self.diverge:g}x its best "
                    f"{best:.4g}",
                    True,
                )
            best = value if best is None else min(best, value)
            if step < self.after * steps:
                continue
            ref = [v for v in (at(c, step) for c in references) if v is not None]
            margin = self.margin(ref)
            if margin is None:
                continue
            mean = statistics.fmean(ref)
            gap = mean - value if self.goal == "max" else value - mean
            reader.behind = reader.behind + 1 if gap > margin else 0
            if reader.behind >= self.patience:
                return Stop(
                    f"early-stopped at step {step}/{steps}: {self.metric} {value:.4g} against the "
                    f"incumbent's {mean:.4g} at the same step, behind by more than {margin:.3g} for "
                    f"{self.patience} reports in a row",
                    False,
                )
        return None

    def margin(self, ref: list[float]) -> float | None:
        """`behind` when set, else `sd` standard deviations of the incumbent's runs at this step;
        None (no verdict) without either."""
        if self.behind is not None:
            return self.behind if ref else None
        if len(ref) < 2:
            return None
        spread = statistics.stdev(ref)
        return self.sd * spread if spread > 0 else None
