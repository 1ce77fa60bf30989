"""Terminal views of the status document (rich); the JSON document is the contract, this is looks."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from . import sandbox
from .evidence import describe
from .safetext import map_text, one_line

_STYLE = {"keep": "bold green", "discard": "dim", "crash": "red", "rejected": "yellow"}


def _num(value: float | None, spec: str = ".6g") -> str:
    return "" if value is None else format(value, spec)


def _shown(text: str) -> str:
    return escape(one_line(text))


def print_status(doc: dict[str, Any], console: Console | None = None) -> None:
    # Piped output gets a wide table rather than rich's 80-column default.
    console = console or Console(width=None if Console().is_terminal else 160)
    doc = map_text(doc, _shown)  # titles, reasons, ids: model-written or not, never markup or escapes
    run, budget, metric = doc["run"], doc["budget"], doc["metric"]
    started = time.strftime("%Y-%m-%d %H:%M", time.localtime(run["created_at"]))
    console.print(
        f"[bold]{run['id']}[/] ({run['task']}): [bold]{run['state']}[/]"
        + (f", {run['reason']}" if run["reason"] else "")
    )
    console.print(
        f"started {started}, {budget['wall_seconds']['used'] / 60:.1f} min, "
        f"{run['executor']} x{run['parallel']}, {run['planner']} planner, dir {run['dir']}"
    )
    protected, line = sandbox.describe(run.get("sandbox"))
    console.print(line, style=None if protected else "bold red")
    if run.get("watch"):
        style = "yellow" if "degraded" in run["watch"] else None
        console.print(f"jobs watched with {run['watch']}", style=style)
    if budget.get("llm_tokens", {}).get("used"):
        usd = budget["llm_usd"]
        limit = f" of ${usd['limit']:g}" if usd.get("limit") else ""
        console.print(
            f"model calls: ${usd['used']:.4f}{limit}, {budget['llm_tokens']['used']} tokens "
            f"({run.get('planner')} planner, {run.get('summarizer')} summarizer)"
        )
    trials_budget = budget["trials"]
    line = (
        f"trials {trials_budget['used']}/{trials_budget['limit']}, "
        f"GPU-hours {budget['gpu_seconds']['used'] / 3600:.2f}; {metric['name']} ({metric['goal']})"
    )
    if doc["baseline"] and doc["baseline"]["metric"] is not None:
        line += f": baseline {_num(doc['baseline']['metric'])}"
    if doc["incumbent"]:
        inc = doc["incumbent"]
        line += f", best {_num(inc['metric'])} by {inc['trial']} ({inc['title']})"
    console.print(line)
    rule = doc.get("decisions")
    if rule:
        console.print("decisions: " + describe(rule))
    fid = doc.get("fidelity")
    if fid:
        console.print(
            f"screening at {fid['screen_steps']} steps, full {fid['full_steps']}: {fid['screened']} "
            f"screened, {fid['promoted']} promoted; GPU-hours {fid['gpu_hours']:.3f} vs "
            f"{fid['full_budget_gpu_hours']:.3f} at full budget (slot-hours {fid['slot_hours']:.3f} vs "
            f"{fid['full_budget_slot_hours']:.3f})"
        )
    table = Table(show_edge=False, header_style="bold")
    for col in ("trial", "parent", "state", "decision", metric["name"], "elapsed", "GPU-s", "job", "title"):
        table.add_column(
            col, no_wrap=True, overflow="ellipsis", justify="right" if col in ("elapsed", "GPU-s") else "left"
        )
    for t in doc["trials"]:
        style = _STYLE.get(t["decision"] or "", "")
        kind = t.get("kind", "hypothesis")
        table.add_row(
            t["id"],
            (t.get("of") or t["parent_trial"] or "-")
            + ("" if kind in ("hypothesis", "baseline") else f" {kind}"),
            t["state"] + (f" ({t['pending_reason']})" if t.get("pending_reason") else ""),
            t["decision"] or "",
            _num(t["metric"]),
            _num(t["elapsed"], ".1f"),
            _num(t["gpu_seconds"], ".0f"),
            t["job_id"] or "",
            t["title"],
            style=style,
        )
    console.print(table)
    hidden = doc.get("trials_total", len(doc["trials"])) - len(doc["trials"])
    if hidden > 0:
        console.print(f"({hidden} earlier trials not shown: `ara status --json`, `ara export` or report.md)")


def print_runs(lines: list[dict[str, Any]], console: Console | None = None) -> None:
    """`ara status --all`: one row per run under the root."""
    console = console or Console(width=None if Console().is_terminal else 160)
    table = Table(show_edge=False, header_style="bold")
    for col in ("run", "state", "started", "trials", "running", "best", "by", "title"):
        table.add_column(col, no_wrap=True, overflow="ellipsis")
    for r in lines:
        best = r["best"] or {}
        started = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created_at"])) if r["created_at"] else ""
        table.add_row(
            r["id"],
            r["state"],
            started,
            f"{r['trials']['used']}/{r['trials']['limit']}",
            str(r["running"]),
            f"{r['metric']['name']} {_num(best.get('metric'))}" if best else "",
            best.get("trial", ""),
            _shown(best.get("title", "")),
        )
    console.print(table)
