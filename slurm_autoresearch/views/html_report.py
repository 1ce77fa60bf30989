"""report.html: a run on one self-contained page (chart, trials, learnings, budget), no network."""

from __future__ import annotations

import base64
import hashlib
import math
import time
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import budget, evidence, fidelity
from ..evidence import Rule, running_best
from ..executors import sandbox
from ..rundir import RunDir, atomic_write_text
from ..trial import Decision, Trial, trial_id
from .lineage import kept_changes

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..spec import TaskSpec

DIFF_TRIALS = 500  # diffs embedded for the latest trials (and every kept one): the page stays small
DIFF_BYTES = 20_000  # per trial; the full diff stays in trials/<id>/patch.diff

# Chart geometry, in SVG user units (the SVG scales to the page width).
_W, _H = 960, 440
_LEFT, _RIGHT, _TOP, _BOTTOM = 70, 20, 40, 70
_LABELS = 20  # the running best's steps are labelled with their trial ids up to this many
_RAIL = 22  # the strip under the plot where crashed and rejected trials sit

# The only script: tells a headless browser (the test) that the chart and the table are on screen.
# It runs at the end of <body>, so the page is laid out without waiting for the load event.
_SELF_CHECK = """
(function () {
  var seen = [];
  [["chart", "progress"], ["table", "trials"]].forEach(function (p) {
    var el = document.getElementById(p[1]);
    if (!el) return;
    var r = el.getBoundingClientRect(), s = getComputedStyle(el);
    if (r.width > 0 && r.height > 0 && s.display !== "none" && s.visibility !== "hidden") seen.push(p[0]);
  });
  document.body.dataset.visible = seen.join(" ");
})();
"""

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 24px; color: #202124; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: #5f6368; margin: 0 0 12px; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: 2px 16px; margin: 0; }
dl.facts dt { color: #5f6368; } dl.facts dd { margin: 0; }
svg#progress { width: 100%; max-width: 1200px; height: auto; display: block; border: 1px solid #dadce0; }
svg text { font: 12px system-ui, sans-serif; fill: #3c4043; }
svg text.label { font-size: 11px; fill: #137333; paint-order: stroke; stroke: #fff; stroke-width: 3px; }
table { border-collapse: collapse; }
table.budget td, table.budget th { padding: 2px 10px 2px 0; text-align: left; }
.bar { width: 160px; height: 8px; background: #e8eaed; border-radius: 4px; overflow: hidden; }
.bar > div { height: 100%; background: #1a73e8; }
table#trials { width: 100%; font-size: 13px; }
table#trials th { white-space: nowrap; position: sticky; top: 0; background: #f1f3f4; text-align: left;
                  padding: 4px 6px; }
table#trials td { border-top: 1px solid #e8eaed; padding: 3px 6px; vertical-align: top; }
/* steps, metric, GPU-h and $ columns: numbers line up */
#trials td:nth-child(4), #trials td:nth-child(n+7):nth-child(-n+9) {
  text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.title { max-width: 46vw; } td.reason { max-width: 28vw; color: #5f6368; }
tr.d-keep td.decision { color: #137333; font-weight: 600; }
tr.d-discard td.decision { color: #5f6368; }
tr.d-crash td.decision, tr.d-rejected td.decision { color: #c5221f; font-weight: 600; }
tr.d-keep { background: #e6f4ea; }
details > summary { cursor: pointer; }
pre { background: #f8f9fa; border: 1px solid #e8eaed; padding: 6px; overflow: auto; max-height: 36em;
      max-width: 100%; font-size: 12px; white-space: pre; }
.note { color: #5f6368; font-size: 12px; }
.pt { fill: currentColor; }
.pt.keep { color: #1e8e3e; stroke: #0d652d; } .pt.discard { color: #9aa0a6; }
.pt.repeat, .pt.promoted { color: #8ab4f8; } .pt.waiting { color: #f9ab00; }
.pt.screen { fill: #fff; stroke: currentColor; stroke-width: 1.5; }
"""

_KEEP, _FAIL = "#1e8e3e", "#d93025"


def write_html_report(rundir: RunDir, spec: TaskSpec | None, ledger: Ledger) -> Path:
    """Write report.html in the run directory (atomically: a reader never sees half a page)."""
    path = rundir.path / "report.html"
    atomic_write_text(path, render_html(rundir, spec, ledger))
    return path


def render_html(rundir: RunDir, spec: TaskSpec | None, ledger: Ledger, now: float | None = None) -> str:
    """The page as a string. spec is optional: the ledger's meta carries the decision rule."""
    now = time.time() if now is None else now
    meta = ledger.meta()
    rule = Rule.of(spec) if spec is not None else (Rule(**meta["rule"]) if meta.get("rule") else None)
    metric = spec.metric.name if spec is not None else meta.get("metric", "metric")
    goal = rule.goal if rule is not None else meta.get("goal", "max")
    # Light rows (no hypothesis JSON) for all; full ones only where the page shows rationale and diff.
    trials = ledger.trials(light=True)
    last_seq = trials[-1].seq if trials else 0
    detailed = {
        t.id: t for t in ledger.select("seq > ? OR decision = 'keep'", (last_seq - DIFF_TRIALS,), light=False)
    }
    incumbent = ledger.incumbent()
    script = _SELF_CHECK.strip()
    body = [
        *_header(rundir, spec, meta, rule, trials, incumbent, now),
        *_budget(meta, ledger, trials, now),
        "<h2>Progress</h2>",
        progress_svg(trials, metric, goal, rule.screen_steps if rule else 0),
        *_table(rundir, trials, detailed, metric, rule, len(trials) > len(detailed)),
        *_kept([detailed.get(t.id, t) for t in trials], meta.get("best_branch")),
        *_learnings(trials),
        f"<script>{script}</script>",
    ]
    title = f"ara run {rundir.run_id}"
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            # Nothing may load from anywhere, and only our own script (by hash) may run: model-written
            # text that slipped past escaping still could not execute or phone home.
            '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
            f"style-src 'unsafe-inline'; script-src '{_script_hash(script)}'; img-src data:\">",
            f"<title>{escape(title)}</title>",
            f"<style>{_CSS}</style>",
            "</head><body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def _script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _num(value: float | None, spec: str = ".6g") -> str:
    return "" if value is None else format(value, spec)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


# -- header and budget ------------------------------------------------------------------------------


def _header(
    rundir: RunDir,
    spec: TaskSpec | None,
    meta: dict[str, Any],
    rule: Rule | None,
    trials: list[Trial],
    incumbent: Trial | None,
    now: float,
) -> list[str]:
    task = spec.task.name if spec is not None else meta.get("task", "")
    goal = rule.goal if rule is not None else meta.get("goal", "max")
    description = spec.task.description if spec is not None else ""
    state = str(meta.get("state", ""))
    reason = meta.get("end_reason") or ""
    facts: list[tuple[str, str]] = [
        ("state", state + (f": {reason}" if reason else "")),
        ("started", _when(meta.get("created_at"))),
        ("ended", _when(meta.get("ended_at")) or "not yet"),
        (
            "ran with",
            f"{meta.get('executor')} executor x{meta.get('parallel')}, {meta.get('planner')} planner, "
            f"{meta.get('summarizer')} summarizer",
        ),
        ("metric", f"{meta.get('metric', '')} ({'higher' if goal == 'max' else 'lower'} is better)"),
        ("trial code", sandbox.describe(meta.get("sandbox"))[1]),
    ]
    baseline = trials[0] if trials else None
    if baseline is not None and baseline.metric is not None:
        line = f"baseline {baseline.metric:.6g}"
        if incumbent is not None and incumbent.metric is not None:
            line += (
                f" -> best {incumbent.metric:.6g} ({incumbent.metric - baseline.metric:+.6g}) by "
                f"{incumbent.id}: {incumbent.title}; branch {meta.get('best_branch')}"
            )
        facts.append(("result", line))
    if rule is not None:
        facts.append(("decisions", evidence.describe(evidence.overview(trials, rule, incumbent))))
        if rule.screen_steps:
            saved = fidelity.savings(trials, rule.full_steps, rule.screen_steps)
            facts.append(
                (
                    "multi-fidelity",
                    f"screened at {rule.screen_steps} steps, full {rule.full_steps}: "
                    f"{saved.gpu_hours:.3f} GPU-hours ({saved.slot_hours:.3f} slot-hours) spent vs "
                    f"{saved.full_budget_gpu_hours:.3f} ({saved.full_budget_slot_hours:.3f}) "
                    "for the same hypotheses at full budget",
                )
            )
    hint = budget.time_limit_hint(trials, meta.get("trial_minutes"))
    if hint:
        facts.append(("hint", hint))
    rows = "".join(f"<dt>{escape(k)}</dt><dd>{escape(v)}</dd>" for k, v in facts)
    return [
        f"<h1>ara run {escape(rundir.run_id)}</h1>",
        f'<p class="sub"><b>{escape(task)}</b>'
        + (f": {escape(description)}" if description else "")
        + f" &middot; page written {escape(_when(now))}</p>",
        f'<dl class="facts">{rows}</dl>',
    ]


def _budget(meta: dict[str, Any], ledger: Ledger, trials: list[Trial], now: float) -> list[str]:
    usd, tokens = ledger.llm_totals()
    wall_h = budget.wall_seconds(meta, now) / 3600
    gpu_h = sum(t.gpu_seconds or 0.0 for t in trials) / 3600
    ideas = budget.hypotheses(trials)
    counted = budget.counted(trials, meta.get("trial_budget"))
    reruns = budget.rerun_seconds(meta, now)
    rows = [
        ("trials (baseline and hypotheses)", ideas, meta.get("trial_budget"), "d"),
        ("GPU-hours", gpu_h, meta.get("gpu_hours"), ".3f"),
        ("LLM dollars", usd, meta.get("llm_usd"), ".4f"),
        ("LLM tokens", tokens, meta.get("llm_tokens"), "d"),
        ("wall-clock hours", wall_h, meta.get("wall_hours"), ".2f"),
    ]
    html = [
        '<h2>Budget spent</h2><table class="budget">',
        "<tr><th></th><th>used</th><th>limit</th><th></th></tr>",
    ]
    for name, used, limit, spec in rows:
        bar = ""
        if limit:
            share = min(1.0, used / limit)
            bar = f'<div class="bar"><div style="width:{share * 100:.1f}%"></div></div>'
        limit_text = format(limit, spec) if limit else "none"
        cells = (name, format(used, spec), limit_text, bar)
        html.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    after = f"; `ara rerun` ran {reruns / 3600:.2f} h more after the run ended" if reruns else ""
    html.append(f"</table><p class=note>trials: {escape(counted)}{escape(after)}.</p>")
    return html


# -- the chart --------------------------------------------------------------------------------------


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
    r = {Decision.KEEP: 5.5, Decision.REPEAT: 3, Decision.PROMOTED: 3}.get(t.decision, 3.5)  # type: ignore[arg-type]
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
    values = [t.metric for t in plotted]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)  # type: ignore[type-var]
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
        out.append(_marker(t, x_of(t.seq), y_of(t.metric)))  # type: ignore[arg-type]
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


# -- the trials table -------------------------------------------------------------------------------


def _table(
    rundir: RunDir,
    trials: list[Trial],
    detailed: dict[str, Trial],
    metric: str,
    rule: Rule | None,
    capped: bool,
) -> list[str]:
    head = ["trial", "kind", "parent", "steps", "hypothesis", "decision", metric, "GPU-h", "LLM $", "reason"]
    out = ["<h2>Trials</h2>"]
    if capped:
        out.append(
            f'<p class="note">Rationale and diffs are embedded for kept trials and the latest {DIFF_TRIALS}; '
            "the others are in trials/&lt;id&gt;/report.md and patch.diff.</p>"
        )
    out.append('<table id="trials"><thead><tr>')
    out += [f"<th>{escape(h)}</th>" for h in head]
    out.append("</tr></thead><tbody>")
    default_steps = rule.steps if rule else None
    for t in trials:
        out.append(_row(rundir, t, detailed.get(t.id), default_steps))
    out.append("</tbody></table>")
    return out


def _row(rundir: RunDir, t: Trial, full: Trial | None, default_steps: int | None) -> str:
    decision = str(t.decision) if t.decision else str(t.state)
    kind = str(t.kind) + (f" of {t.of}" if t.of else "")
    steps = t.steps if t.steps is not None else default_steps
    gpu_h = _num(t.gpu_seconds / 3600, ".4f") if t.gpu_seconds is not None else ""
    usd = f"{t.llm_usd:.4f}" if t.llm_usd else ""
    cells = [
        f'<td><a href="trials/{t.id}/report.md">{t.id}</a></td>',
        f"<td>{escape(kind)}</td>",
        f"<td>{escape(t.parent_trial or '-')}</td>",
        f"<td>{'' if steps is None else steps}</td>",
        f'<td class="title"><details><summary>{escape(t.title)}</summary>{_details(rundir, t, full)}'
        "</details></td>",
        f'<td class="decision">{escape(decision)}</td>',
        f"<td>{_num(t.metric)}</td>",
        f"<td>{gpu_h}</td>",
        f"<td>{usd}</td>",
        f'<td class="reason">{escape(t.reason)}</td>',
    ]
    return f'<tr id="{t.id}" class="d-{escape(decision)}">{"".join(cells)}</tr>'


def _details(rundir: RunDir, t: Trial, full: Trial | None) -> str:
    """What the trial's row expands to: rationale, summary, evidence, learning and (capped) diff."""
    parts: list[str] = []
    if full is not None and full.hypothesis.rationale:
        parts.append(f"<p><b>Why:</b> {escape(full.hypothesis.rationale)}</p>")
    if full is not None and full.hypothesis.expected:
        parts.append(f"<p><b>Expected:</b> {escape(full.hypothesis.expected)}</p>")
    if t.summary:
        parts.append(f"<p><b>Summary:</b> {escape(t.summary)}</p>")
    ev = _evidence_text(t.evidence or {})
    if ev:
        parts.append(f"<p><b>Evidence:</b> {escape(ev)}</p>")
    if t.holdout is not None:
        parts.append(f"<p><b>Holdout:</b> {t.holdout:.6g}</p>")
    if t.learning:
        parts.append(f"<p><b>Learning:</b> {escape(t.learning)}</p>")
    if full is not None:
        parts.append(_diff(rundir.trial_dir(t.id) / "patch.diff"))
    return "".join(parts)


def _evidence_text(ev: dict[str, Any]) -> str:
    if not ev.get("candidate"):
        return ""
    text = "runs [" + ", ".join(f"{v:.6g}" for v in ev["candidate"]) + "]"
    if ev.get("incumbent"):
        text += (
            f" vs {ev.get('incumbent_trial')} [{', '.join(f'{v:.6g}' for v in ev['incumbent'])}]: "
            f"delta {ev['delta']:+.4g}, margin {ev['margin']:.4g} ({ev['rule']}"
            + (f", sd {ev['sigma']:.4g}" if ev.get("sigma") is not None else "")
            + ")"
        )
    if ev.get("holdout_flag"):
        text += f"; {ev['holdout_flag']}"
    return text


def _diff(path: Path) -> str:
    try:
        with path.open("rb") as fh:
            data = fh.read(DIFF_BYTES + 1)
    except FileNotFoundError:
        return '<p class="note">No diff recorded.</p>'
    text = data[:DIFF_BYTES].decode("utf-8", errors="replace")
    if not text.strip():
        return '<p class="note">No change (the baseline, or a re-run of its commit).</p>'
    note = (
        f'<p class="note">Diff cut at {DIFF_BYTES // 1000} KB; the whole is in {escape(str(path.name))}.</p>'
        if len(data) > DIFF_BYTES
        else ""
    )
    return f"<pre>{escape(text)}</pre>{note}"


# -- kept changes and learnings ---------------------------------------------------------------------


def _kept(trials: list[Trial], branch: str | None) -> list[str]:
    """The best branch's keeps from the baseline on, then the keeps it does not hold (kept rows
    must be full: a combination names its other side in its hypothesis)."""
    kept = kept_changes(trials)
    if not kept:
        return []
    on = "".join(
        f"<li>{k.trial.id} {escape(k.trial.title)}: {_num(k.trial.metric)}"
        + (f" (merges {escape(k.merges)})" if k.merges else "")
        + "</li>"
        for k in kept
        if k.on_best
    )
    out = [
        "<h2>Kept changes, in order</h2>",
        f"<p>On the best branch <code>{escape(str(branch))}</code>, from the baseline to the best:</p>",
        f'<ol class="lineage">{on}</ol>',
    ]
    off = "".join(
        f"<li>{k.trial.id} {escape(k.trial.title)}: {_num(k.trial.metric)}, not on the best branch</li>"
        for k in kept
        if not k.on_best
    )
    if off:
        out += ["<p>Kept when decided, then superseded and never merged:</p>", f'<ul class="off">{off}</ul>']
    return out


def _learnings(trials: list[Trial]) -> list[str]:
    lines = [f"<li>{t.id} {escape(t.learning)}</li>" for t in trials if t.learning]
    if not lines:
        return []
    return ["<h2>Learnings</h2>", f"<ul>{''.join(lines)}</ul>"]
