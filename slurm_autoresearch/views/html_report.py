"""report.html: a run on one self-contained page (chart, trials, learnings, budget), no network."""

from __future__ import annotations

import base64
import hashlib
import time
from html import escape
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import budget, evidence, fidelity, transfer
from ..digest import read as read_digest
from ..evidence import Rule
from ..executors import sandbox
from ..rundir import RunDir, atomic_write_text
from ..trial import Trial
from .chart import progress_svg
from .lineage import kept_changes

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..spec import TaskSpec

DIFF_TRIALS = 500  # diffs embedded for the latest trials (and every kept one): the page stays small
DIFF_BYTES = 20_000  # per trial; the full diff stays in trials/<id>/patch.diff


def _template(name: str) -> str:
    """The page's stylesheet (report.css) or its only script (report.js), from the package's templates/.

    The script tells a headless browser (the test) that the chart and the table are on screen; it
    runs at the end of <body>, so the page is laid out without waiting for the load event.
    """
    return resources.files("slurm_autoresearch").joinpath(f"templates/{name}").read_text(encoding="utf-8")


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
        t.id: t for t in ledger.kept_or_after(last_seq - DIFF_TRIALS)
    }
    incumbent = ledger.incumbent()
    script = _template("report.js").strip()
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
            f"<style>\n{_template('report.css')}</style>",
            "</head><body>",
            *body,
            "</body></html>",
            "",
        ]
    )


def _script_hash(script: str) -> str:
    return "sha256-" + base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()


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
            plan = meta.get("fidelity_plan") or {}
            if plan.get("why"):
                facts.append(("fidelity (auto)", str(plan["why"])))
    check = transfer.verdict(trials, goal, baseline.steps or 0) if baseline is not None else None
    if check is not None:
        facts.append(("transfer check", check.line()))
    elif meta.get("transfer_skipped"):
        facts.append(("transfer check", f"not run: {meta['transfer_skipped']}"))
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
    # Curves only where the page embeds details (the latest and kept trials): one small file each.
    curve = read_digest(rundir.trial_dir(t.id)) if full is not None and t.job_id else None
    if curve is not None:
        parts.append(f'<p class="curve"><b>Curves:</b> {escape(curve.line())}</p>')
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
