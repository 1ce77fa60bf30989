"""A trial's learning curves in a few numbers and fixed words: points, the best, shape flags."""

from __future__ import annotations

import json
import math
import re
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .curve import Point, at
from .rundir import atomic_write_text

DIGEST_FILE = "digest.json"
FLAGS = ("diverged", "unstable", "early-peak", "plateau", "gap-widening")
POINTS = 6  # points kept per curve: its first and last, its best (or where it diverged), evenly between
NAME_CHARS = 40  # a curve's name as shown; the task file's names, cut and cleaned
LINE_CHARS = 320  # a digest's one line never exceeds this: the planner's prompt stays bounded
READ_BYTES = 16 * 1024  # a digest.json larger than this is not ours (a written one is under 2 KiB)
MIN_POINTS = 5  # fewer points have no shape to judge: only `diverged` is said of them
WINDOW = 5  # the running median that stands for a curve's trend: one or two spikes do not move it
_NAME = re.compile(r"[^A-Za-z0-9_./-]")

# diverged: a non-finite value, or a training loss (a "min" curve) above this multiple of its best
# so far, as [early_stop] diverge's default: a loss that quadruples has blown up, not wobbled. A
# validation loss that climbs is overfitting (early-peak), not divergence, so this is training's.
DIVERGE = 4.0
# unstable: the step-to-step noise (from second differences, so a smooth bend is not noise) above
# a fifth of the curve's spread, or at least two spikes off its trend by over half the spread (one
# can be a bad batch). The spread is the trend's range, but at least a tenth of the curve's level:
# a flat curve with a little noise is a plateau, not instability.
JITTER_SHARE = 0.2
SPIKE_SHARE = 0.5
SPIKES = 2
LEVEL_SHARE = 0.1
# early-peak: validation's trend leaves its best for good (by over 5% of the trend's range and 3
# noise sd) within the first half of the steps, and its end is worse than that best by over 15% of
# the range and by over 3 noise sd (a decline beyond the noise).
EARLY_SHARE = 0.5
NEAR_BEST_SHARE = 0.05
DECLINE_SHARE = 0.15
NOISE_SD = 3.0
# plateau: after the first 30% of the steps validation improves by under 5% of its range, or by no
# more than 2 noise sd: it was done early, and more steps of the same would not help.
PLATEAU_FROM = 0.3
PLATEAU_SHARE = 0.05
PLATEAU_SD = 2.0
# gap-widening: over the second half of the steps both curves cover, training improves by over 10%
# of its range (and beyond the noise) while validation gains under 2% of its range, or loses.
GAP_FROM = 0.5
GAP_TRAIN_SHARE = 0.1
GAP_VAL_SHARE = 0.02


def _name(text: str) -> str:
    return _NAME.sub("", text)[:NAME_CHARS]


def _num(value: float) -> str:
    return f"{value:.3g}"


@dataclass(frozen=True)
class Series:
    """One curve cut to a few points."""

    name: str
    goal: str  # "min" | "max"
    points: tuple[Point, ...]  # at most POINTS, in step order
    best: Point | None  # its best finite point; None when it has none
    count: int  # points read from the log

    def text(self) -> str:
        return f"{self.name} " + " ".join(f"{_num(v)}@{s}" for s, v in self.points)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "goal": self.goal,
            "points": [list(p) for p in self.points],
            "best": list(self.best) if self.best else None,
            "count": self.count,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Series | None:
        """A series as written, or None: only numbers and the task's cleaned names get through."""
        if data is None:
            return None
        goal = data["goal"]
        if goal not in ("min", "max") or not isinstance(data["name"], str):
            raise ValueError(goal)
        points = tuple(_point(p) for p in data["points"][:POINTS])
        best = _point(data["best"]) if data["best"] is not None else None
        if not points:
            raise ValueError("no points")
        return cls(_name(data["name"]), goal, points, best, int(data["count"]))


def _point(raw: Any) -> Point:
    step, value = raw
    if type(step) is not int or type(value) not in (int, float):
        raise ValueError(raw)
    return (step, float(value))


@dataclass(frozen=True)
class Digest:
    """What the curves of one trial say: a few points of each, the best validation point, flags."""

    train: Series | None
    val: Series | None
    flags: tuple[str, ...] = ()  # words of FLAGS, in that order
    diverged_at: int | None = None  # the first step where a curve went non-finite or blew up

    def line(self) -> str:
        """One line for the planner's history and the reports: `curve val_loss 0.92@0 0.55@400
        0.58@600 best 0.55@400; train loss 1.1->0.3; flags: early-peak, gap-widening`."""
        parts = []
        if self.val is not None:
            best = f" best {_num(self.val.best[1])}@{self.val.best[0]}" if self.val.best else ""
            parts.append(self.val.text() + best)
        if self.train is not None:
            if self.val is not None:
                first, last = self.train.points[0][1], self.train.points[-1][1]
                parts.append(f"train {self.train.name} {_num(first)}->{_num(last)}")
            else:
                parts.append("train " + self.train.text())
        flags = [
            f"diverged at step {self.diverged_at}" if f == "diverged" and self.diverged_at is not None else f
            for f in self.flags
        ]
        if flags:
            parts.append("flags: " + ", ".join(flags))
        return ("curve " + "; ".join(parts))[:LINE_CHARS]

    def note(self) -> str:
        """What the flags say, in a few words, for a learning line; "" when they say nothing."""
        val = self.val.name if self.val is not None else "validation"
        words = []
        if "diverged" in self.flags:
            at_step = f" at step {self.diverged_at}" if self.diverged_at is not None else ""
            words.append(f"diverged{at_step}")
        if "unstable" in self.flags:
            words.append("unstable")
        if "early-peak" in self.flags:
            peak = self.val.best if self.val is not None else None
            words.append(f"{val} best early" + (f" (step {peak[0]})" if peak else "") + ", then worse")
        if "plateau" in self.flags:
            words.append(f"{val} flat early")
        if "gap-widening" in self.flags:
            words.append("train-val gap widening")
        return ", ".join(words)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": self.train.to_dict() if self.train else None,
            "val": self.val.to_dict() if self.val else None,
            "flags": list(self.flags),
            "diverged_at": self.diverged_at,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Digest | None:
        """The digest as written, or None for anything else (the trial directory is the job's)."""
        try:
            flags = data["flags"]
            at_step = data["diverged_at"]
            if not isinstance(flags, list) or not (at_step is None or type(at_step) is int):
                return None
            digest = cls(
                Series.from_dict(data["train"]),
                Series.from_dict(data["val"]),
                tuple(f for f in FLAGS if f in flags),
                at_step,
            )
        except (KeyError, TypeError, ValueError, AttributeError):
            return None
        return digest if digest.train is not None or digest.val is not None else None


def write(trial_dir: Path, digest: Digest | None) -> None:
    """digest.json in the trial directory; none (an older one removed) when there is no curve."""
    path = trial_dir / DIGEST_FILE
    if digest is None:
        path.unlink(missing_ok=True)
        return
    atomic_write_text(path, json.dumps(digest.to_dict()) + "\n")


def read(trial_dir: Path) -> Digest | None:
    try:
        with (trial_dir / DIGEST_FILE).open("rb") as fh:
            data = fh.read(READ_BYTES + 1)
    except OSError:
        return None
    if len(data) > READ_BYTES:
        return None
    try:
        return Digest.from_dict(json.loads(data.decode("utf-8")))
    except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested past the parser's depth
        return None


# -- the rules --------------------------------------------------------------------------------


def summarize(
    train: list[Point],
    val: list[Point],
    *,
    train_name: str = "loss",
    train_goal: str = "min",
    val_name: str = "val_loss",
    val_goal: str = "min",
) -> Digest | None:
    """The digest of a trial's curves (each in step order, one attempt's); None when neither has
    two points."""
    tr = _Shape(train, train_goal, blow_up=True) if len(train) >= 2 else None
    va = _Shape(val, val_goal, blow_up=False) if len(val) >= 2 else None
    if tr is None and va is None:
        return None
    flags = []
    diverged = [s for s in (tr.diverged if tr else None, va.diverged if va else None) if s is not None]
    if diverged:
        flags.append("diverged")
    if any(shape.unstable() for shape in (tr, va) if shape is not None):
        flags.append("unstable")
    if va is not None and va.early_peak():
        flags.append("early-peak")
    elif va is not None and va.plateau():
        flags.append("plateau")
    if tr is not None and va is not None and _gap_widening(tr, va):
        flags.append("gap-widening")
    return Digest(
        _series(train, train_name, train_goal, tr),
        _series(val, val_name, val_goal, va),
        tuple(flags),
        min(diverged) if diverged else None,
    )


def _series(points: list[Point], name: str, goal: str, shape: _Shape | None) -> Series | None:
    if shape is None:
        return None
    finite = [p for p in points if math.isfinite(p[1])]
    pick = min if goal == "min" else max
    best = pick(finite, key=lambda p: p[1]) if finite else None
    # The divergence is what a diverged curve shows; else its best point.
    keep = next((i for i, p in enumerate(points) if p[0] == shape.diverged), None)
    if keep is None and best is not None:
        keep = points.index(best)
    return Series(_name(name), goal, _pick(points, keep), best, len(points))


def _pick(points: list[Point], keep: int | None) -> tuple[Point, ...]:
    """At most POINTS of them: evenly spaced from the first to the last, with `keep` among them."""
    n = len(points)
    if n <= POINTS:
        return tuple(points)
    chosen = sorted({round(i * (n - 1) / (POINTS - 1)) for i in range(POINTS)})
    if keep is not None and keep not in chosen:
        inner = chosen[1:-1]
        chosen[chosen.index(min(inner, key=lambda i: abs(i - keep)))] = keep
        chosen.sort()
    return tuple(points[i] for i in chosen)


def _running_median(y: list[float]) -> list[float]:
    """The trend: a median over up to WINDOW points centred on each (fewer at the ends, where the
    window shrinks evenly), so a monotone curve is its own trend and a lone spike is ignored."""
    half = WINDOW // 2
    out = []
    for i in range(len(y)):
        k = min(half, i, len(y) - 1 - i)
        out.append(statistics.median(y[i - k : i + k + 1]))
    return out


class _Shape:
    """A curve oriented so that lower is better, cut before it diverged, with its trend and noise."""

    def __init__(self, points: list[Point], goal: str, *, blow_up: bool) -> None:
        self.diverged = _diverged_at(points, goal, blow_up)
        usable = [p for p in points if self.diverged is None or p[0] < self.diverged]
        usable = [p for p in usable if math.isfinite(p[1])]
        self.steps = [s for s, _ in usable]
        self.y = [v if goal == "min" else -v for _, v in usable]
        self.n = len(self.y)
        if self.n < MIN_POINTS:
            return
        self.trend = _running_median(self.y)
        self.range = max(self.trend) - min(self.trend)
        level = abs(statistics.median(self.y))
        self.spread = max(self.range, LEVEL_SHARE * level, 1e-12)
        # Second differences cancel a curve's slope and most of its bend; for independent noise
        # of sd s they have sd s*sqrt(6). Their median absolute value shrugs off a spike or two.
        d2 = [self.y[i - 1] - 2 * self.y[i] + self.y[i + 1] for i in range(1, self.n - 1)]
        self.noise = statistics.median(abs(d) for d in d2) / (0.6745 * math.sqrt(6))
        self.curve = list(zip(self.steps, self.trend, strict=True))

    @property
    def shaped(self) -> bool:
        return self.n >= MIN_POINTS and self.steps[-1] > self.steps[0]

    def unstable(self) -> bool:
        if not self.shaped:
            return False
        spikes = sum(
            1 for i in range(1, self.n - 1) if abs(self.y[i] - self.trend[i]) > SPIKE_SHARE * self.spread
        )
        return spikes >= SPIKES or self.noise > JITTER_SHARE * self.spread

    def early_peak(self) -> bool:
        if not self.shaped:
            return False
        first, span = self.steps[0], self.steps[-1] - self.steps[0]
        best = min(self.trend)
        # The peak ends where the trend leaves its best for good: a flat bottom that lasts until
        # late, with the lowest point early in it by chance, is no early peak.
        near = max(NOISE_SD * self.noise, NEAR_BEST_SHARE * self.range)
        peak_end = max(s for s, t in self.curve if t - best <= near)
        end = statistics.median(self.y[-3:])  # a final spike alone is not a decline
        decline = end - best
        return (
            peak_end - first <= EARLY_SHARE * span
            and decline > DECLINE_SHARE * self.range
            and decline > NOISE_SD * self.noise
        )

    def plateau(self) -> bool:
        if not self.shaped:
            return False
        start = self.steps[0] + PLATEAU_FROM * (self.steps[-1] - self.steps[0])
        then = at(self.curve, round(start))
        later = [t for s, t in self.curve if s >= start]
        if then is None or not later:
            return False
        gain = then - min(later)
        return gain <= max(PLATEAU_SHARE * self.range, PLATEAU_SD * self.noise)

    def gain(self, start: int, end: int) -> float | None:
        """How much the trend improved from one step to a later one."""
        a, b = at(self.curve, start), at(self.curve, end)
        return None if a is None or b is None else a - b


def _diverged_at(points: list[Point], goal: str, blow_up: bool) -> int | None:
    best: float | None = None
    for step, value in points:
        if not math.isfinite(value):
            return step
        if blow_up and goal == "min" and best is not None and best > 0 and value > DIVERGE * best:
            return step
        best = value if best is None else min(best, value)
    return None


def _gap_widening(train: _Shape, val: _Shape) -> bool:
    if not (train.shaped and val.shaped):
        return False
    lo, hi = max(train.steps[0], val.steps[0]), min(train.steps[-1], val.steps[-1])
    if hi <= lo:
        return False
    mid = round(lo + GAP_FROM * (hi - lo))
    trained, validated = train.gain(mid, hi), val.gain(mid, hi)
    if trained is None or validated is None:
        return False
    return (
        trained > GAP_TRAIN_SHARE * train.range
        and trained > NOISE_SD * train.noise
        and validated <= max(GAP_VAL_SHARE * val.range, val.noise)
    )
