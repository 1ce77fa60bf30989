"""The progress chart of report.html as inline SVG: each trial's metric, the running best, failures."""

from __future__ import annotations

import math
from html import escape

from ..evidence import running_best
from ..trial import Decision, Trial, trial_id

# Chart geometry, in SVG user units (the SVG scales to the page width).
_W, _H = 960, 440
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 40, 70
_LABELS = 20  # the running best's steps are labelled with their trial ids up to this many
_RAIL = 22  # the strip under the plot where crashed and rejected trials sit

_KEEP, _FAIL = "#1e8e3e", "#d93025"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    span = high - low
    if span <= 0:
        return [low]
    raw = span / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def _plotted(t: Trial) -> bool:
    """A measured trial drawn at its value; crashed and rejected ones sit on the rail instead."""
    return _finite(t.metric) and not (t.decision is not None and t.decision.is_failure())


def _marker(t: Trial, x: float, y: float) -> str:
    decision = str(t.decision) if t.decision else "waiting"
    radii: dict[Decision | None, float] = {Decision.KEEP: 5.5, Decision.REPEAT: 3, Decision.PROMOTED: 3}
    r = radii.get(t.decision, 3.5)
    # Screen-fidelity runs are hollow: their values are not comparable with full-budget ones.
    screen = " screen" if t.fidelity == "screen" else ""
    tip = f"{t.id} {decision} {t.metric:.6g}" + (f": {t.title}" if t.decision is Decision.KEEP else "")
    # Colours come from the stylesheet by class: 10,000 markers stay short.
    return (
        f'<circle class="pt {decision}{screen}" cx="{x:.1f}" cy="{y:.1f}" r="{r}">'
        f"<title>{escape(tip)}</title></circle>"
    )


def progress_svg(trials: list[Trial], metric: str, goal: str, screen_steps: int = 0) -> str:
    """autoresearch's figure as inline SVG: metric per trial by decision, the running best as a step
    line, failures as red crosses on a rail under the plot, screen-fidelity runs hollow."""
    plotted = [t for t in trials if _plotted(t)]
    failed = [t for t in trials if t.decision is not None and t.decision.is_failure()]
    values = [t.metric for t in plotted if t.metric is not None]  # all of them: plotted is measured
    low, high = (min(values), max(values)) if values else (0.0, 1.0)
    pad = (high - low) * 0.06 or abs(high) * 0.05 or 0.05
    low, high = low - pad, high + pad
    last = max((t.seq for t in trials), default=1)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM - _RAIL

    def x_of(seq: int) -> float:
        return _LEFT + (seq - 0.5) / max(last, 1) * plot_w

    def y_of(value: float) -> float:
        return _TOP + (high - value) / (high - low) * plot_h

    kept = sum(1 for t in trials if t.decision is Decision.KEEP)
    better = "higher" if goal == "max" else "lower"
    title = f"{metric} ({better} is better) per trial: {len(trials)} trials, {kept} kept"
    out = [
        f'<svg id="progress" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{escape(title)}">',
        f'<text x="{_LEFT}" y="22" style="font-size:15px;font-weight:600">{escape(title)}</text>',
        f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#dadce0"/>',
    ]
    for v in _ticks(low, high):
        y = y_of(v)
        out.append(
            f'<line x1="{_LEFT}" x2="{_LEFT + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#f1f3f4"/>'
            f'<text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{v:.4g}</text>'
        )
    rail_y = _TOP + plot_h + _RAIL / 2
    for seq in _ticks(1, last, 10) if last > 1 else [1.0]:
        if seq != int(seq):
            continue  # trials are whole numbers; a short run's ticks may be fractional
        x = x_of(int(seq))
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{_TOP + plot_h + _RAIL}" y2="{_TOP + plot_h + _RAIL + 4}" '
            f'stroke="#5f6368"/><text x="{x:.1f}" y="{_TOP + plot_h + _RAIL + 17}" '
            f'text-anchor="middle">{int(seq)}</text>'
        )
    out += [
        f'<text x="{_LEFT - 6}" y="{rail_y + 4:.1f}" text-anchor="end" style="fill:{_FAIL}">failed</text>',
        f'<text x="{_LEFT + plot_w / 2}" y="{_TOP + plot_h + _RAIL + 34}" text-anchor="middle">trial</text>',
        f'<text transform="translate(16 {_TOP + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        f"{escape(metric)}</text>",
    ]
    best = running_best(trials, goal)
    if best:
        path = [f"M{x_of(best[0][0]):.1f},{y_of(best[0][1]):.1f}"]
        path += [f"H{x_of(seq):.1f}V{y_of(value):.1f}" for seq, value in best[1:]]
        path.append(f"H{x_of(last):.1f}")
        out.append(f'<path class="best" d="{"".join(path)}" fill="none" stroke="{_KEEP}" stroke-width="2"/>')
        if len(best) <= _LABELS:
            out += [_label(x_of(seq), y_of(value), trial_id(seq)) for seq, value in best]
    # Kept markers last, so they are drawn over the crowd of discards.
    for t in sorted(plotted, key=lambda t: t.decision is Decision.KEEP):
        assert t.metric is not None  # plotted is measured
        out.append(_marker(t, x_of(t.seq), y_of(t.metric)))
    for t in failed:
        x = x_of(t.seq)
        out.append(
            f'<path class="fail {t.decision}" '
            f'd="M{x - 4:.1f},{rail_y - 4:.1f}l8,8m0,-8l-8,8" stroke="{_FAIL}" stroke-width="2">'
            f"<title>{t.id} {t.decision}</title></path>"
        )
    out.append(_legend(any(t.fidelity == "screen" for t in trials), screen_steps))
    out.append("</svg>")
    return "\n".join(out)


def _label(x: float, y: float, trial: str) -> str:
    """A kept step's trial id over its marker (titles collide when steps are close; they are in the
    marker's tooltip and the table); a white halo keeps it readable over the line."""
    return f'<text class="label" x="{x:.1f}" y="{y - 9:.1f}" text-anchor="middle">{trial}</text>'


def _legend(screen: bool, screen_steps: int) -> str:
    items = [
        ('<circle class="key pt keep" r="5"/>', "kept"),
        ('<circle class="key pt discard" r="3.5"/>', "discarded"),
        ('<circle class="key pt repeat" r="3"/>', "repeat / promoted"),
        (f'<path d="M-4,-4l8,8m0,-8l-8,8" stroke="{_FAIL}" stroke-width="2"/>', "crash / rejected"),
        (f'<path d="M-8,0h16" stroke="{_KEEP}" stroke-width="2"/>', "running best"),
    ]
    if screen:
        label = f"screen ({screen_steps} steps)" if screen_steps else "screen fidelity"
        items.append(('<circle class="key pt discard screen" r="3.5"/>', label))
    out = ['<g class="legend">']
    x = _LEFT
    for mark, label in items:
        out.append(
            f'<g transform="translate({x + 8} {_H - 30})">{mark}<text x="12" y="4">{escape(label)}</text></g>'
        )
        x += 30 + 7 * len(label)
    out.append("</g>")
    return "".join(out)
