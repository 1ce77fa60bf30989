"""The planner's prompt: a cached stable part (instructions, playbook, files) and a bounded history."""

from __future__ import annotations

from collections import Counter
from typing import Any

from ..trial import Decision, Trial
from .base import PlanContext

RECENT_TRIALS = 15  # trials shown one line each; older ones are summarized in a few lines
CURVE_TRIALS = 8  # the latest of those with a curve digest get its line too (at most ~80 tokens each)
OLDER_KEPT = 5
OLDER_LEARNINGS = 8
FILES_BUDGET_BYTES = 200_000  # editable files beyond this are listed by name only

INSTRUCTIONS = """\
You are the planner of ara, an autonomous ML research loop. Each hypothesis you propose becomes
one git commit on top of the current best code (the incumbent), is trained with a fixed step
budget, and is kept only if the frozen evaluation's metric beats the incumbent by the margin.

Rules for every hypothesis:
- One idea per hypothesis, with a short title (plain words, no shell characters), a rationale, the
  expected effect on the metric, and a risk (low, medium or high).
- Edits are search/replace blocks on the files shown below, with paths exactly as shown. The search
  text is whole lines copied from the current file, with their indentation: it must begin at the
  start of a line, end at the end of one and occur exactly once; an empty search creates a new
  file. Only files of the edit surface may change; frozen files never.
- Do not touch the evaluation, the data, the step budget, the seed handling or the metric.
- Prefer changes that can show their effect within the step budget; simpler changes win ties.
- Do not repeat a hypothesis the history shows was already tried unless you change it.
"""


def system_blocks(ctx: PlanContext) -> list[dict[str, Any]]:
    """Two cached blocks: what holds for the whole run, then the incumbent's files."""
    spec = ctx.task.spec
    surface = ctx.task.surface
    task = (
        f"TASK {spec.task.name}: {spec.task.description.strip()}\n"
        f"Metric: {spec.metric.name}, {'higher' if spec.metric.goal == 'max' else 'lower'} is better; "
        f"keep margin {spec.metric.min_delta:g}. Step budget per trial: {spec.budget.steps}.\n"
        f"Edit surface: {', '.join(g.pattern for g in surface.allow)}; "
        f"frozen: {', '.join(g.pattern for g in surface.freeze) or 'none'}.\n"
    )
    stable = INSTRUCTIONS + "\n" + task + "\nPLAYBOOK\n" + (ctx.playbook.strip() or "(none)") + "\n"
    return [
        {"type": "text", "text": stable, "cache_control": {"type": "ephemeral"}},
        {"type": "text", "text": files_text(ctx.files), "cache_control": {"type": "ephemeral"}},
    ]


def files_text(files: dict[str, str]) -> str:
    parts, used, skipped = ["INCUMBENT FILES (the edit surface at the current best commit)\n"], 0, []
    for path in sorted(files):
        text = files[path]
        if used + len(text) > FILES_BUDGET_BYTES:
            skipped.append(path)
            continue
        used += len(text)
        parts.append(
            f"=== FILE: {path} ===\n{text}{'' if text.endswith(chr(10)) else chr(10)}=== END FILE ===\n"
        )
    if skipped:
        parts.append("Not shown (size): " + ", ".join(skipped) + "\n")
    return "".join(parts)


def _line(t: Trial, metric: str) -> str:
    value = f"{t.metric:.6g}" if t.metric is not None else "-"
    learning = t.learning[:160] if t.learning else ""
    title = " ".join(t.title.split())[:120]
    return f"{t.id} {t.parent_trial or '-'} {title} | {metric} {value} | {t.decision or t.state} | {learning}"


def history_text(ctx: PlanContext) -> str:
    """One line per recent trial, a bounded summary of the rest: flat however long the run."""
    metric = ctx.task.spec.metric.name
    trials = ctx.trials
    older, recent = trials[:-RECENT_TRIALS], trials[-RECENT_TRIALS:]
    lines = ["HISTORY (id parent title | metric | decision | learning)"]
    if older:
        counts = Counter(str(t.decision or t.state) for t in older)
        kept = [t for t in older if t.decision is Decision.KEEP][-OLDER_KEPT:]
        learnings = list(dict.fromkeys(t.learning for t in older if t.learning))[-OLDER_LEARNINGS:]
        lines.append(
            f"Earlier: {len(older)} trials ({', '.join(f'{n} {k}' for k, n in sorted(counts.items()))})."
        )
        if kept:
            lines.append("Kept earlier, in order: " + "; ".join(f"{t.id} {t.title[:60]}" for t in kept))
        lines += [f"- {learning[:120]}" for learning in learnings]
    with_curve = [t.id for t in recent if t.id in ctx.digests][-CURVE_TRIALS:]
    if with_curve:
        lines.append(
            "'curve' lines: a trial's validation curve as value@step with its best, training's "
            "first->last, and flags read from their shapes."
        )
    for t in recent:
        lines.append(_line(t, metric))
        if t.id in with_curve:
            lines.append("  " + ctx.digests[t.id].line())
    return "\n".join(lines)


def user_text(ctx: PlanContext, n: int) -> str:
    inc = ctx.incumbent
    best = (
        f"Incumbent: {inc.id} ({inc.title[:80]}), {ctx.task.spec.metric.name} {inc.metric:.6g}."
        if inc and inc.metric is not None
        else "No incumbent yet."
    )
    parts = [history_text(ctx), "", best, f"Budget left: {ctx.trials_left} trials. {ctx.budget_note}".strip()]
    if ctx.queued:
        titles = "; ".join(" ".join(h.title.split())[:100] for h in ctx.queued)
        parts += ["", f"QUEUED (planned, waiting for a free slot; do not propose again): {titles}"]
    if ctx.guidance.strip():
        parts += ["", "GUIDANCE FROM THE RESEARCHER (follow it):", ctx.guidance.strip()[-4000:]]
    parts += [
        "",
        f"Propose exactly {n} hypotheses, each different from what was tried, by calling propose_hypotheses.",
    ]
    return "\n".join(parts)


PROPOSE_TOOL: dict[str, Any] = {
    "name": "propose_hypotheses",
    "description": "Propose hypotheses to try next, each as search/replace edits of the shown files.",
    "strict": True,
    "input_schema": {
        "type": "object",
        "properties": {
            "hypotheses": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string"},
                        "rationale": {"type": "string"},
                        "expected": {"type": "string"},
                        "risk": {"type": "string", "enum": ["low", "medium", "high"]},
                        "edits": {
                            "type": "array",
                            "items": {
                                "type": "object",
                                "properties": {
                                    "path": {"type": "string"},
                                    "search": {"type": "string"},
                                    "replace": {"type": "string"},
                                },
                                "required": ["path", "search", "replace"],
                                "additionalProperties": False,
                            },
                        },
                    },
                    "required": ["title", "rationale", "expected", "risk", "edits"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["hypotheses"],
        "additionalProperties": False,
    },
}
