"""Terminal views of the status document (rich); the JSON document is the contract, this is looks."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, JustifyMethod
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from ..budget import trials_line
from ..evidence import describe
from ..executors import sandbox
from ..safetext import map_text, one_line

_STYLE = {"keep": "bold green", "discard": "dim", "crash": "red", "rejected": "yellow"}
_CAPS = {"parent": 13, "state": 18, "job": 12}  # widest a column gets; longer cells end in "…"
_OPTIONAL = ("job", "GPU-s", "elapsed")  # left out, in this order, when the title would get narrow
_TITLE_MIN = 20


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
    wall = budget["wall_seconds"]
    reruns = f" (+ {wall['reruns'] / 60:.1f} min of `ara rerun` after it)" if wall.get("reruns") else ""
    console.print(
        f"started {started}, {wall['used'] / 60:.1f} min{reruns}, "
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
    line = (
        f"trials {_trials(budget['trials'])}, GPU-hours {budget['gpu_seconds']['used'] / 3600:.2f}; "
        f"{metric['name']} ({metric['goal']})"
    )
    if doc["baseline"] and doc["baseline"]["metric"] is not None:
        line += f": baseline {_num(doc['baseline']['metric'])}"
    if doc["incumbent"]:
        inc = doc["incumbent"]
        line += f", best {_num(inc['metric'])} by {inc['trial']} ({inc['title']})"
    console.print(line)
    rule = doc.get("decisions")
    if rule:
        console.print(
            "decisions: " + describe(rule), style="bold yellow" if rule.get("unmeasurable") else None
        )
    for hint in doc.get("hints") or []:
        console.print(f"hint: {hint}", style="yellow")
    fid = doc.get("fidelity")
    if fid:
        console.print(
            f"screening at {fid['screen_steps']} steps, full {fid['full_steps']}: {fid['screened']} "
            f"screened, {fid['promoted']} promoted; GPU-hours {fid['gpu_hours']:.3f} vs "
            f"{fid['full_budget_gpu_hours']:.3f} at full budget (slot-hours {fid['slot_hours']:.3f} vs "
            f"{fid['full_budget_slot_hours']:.3f})"
        )
        if fid.get("plan") and fid["plan"].get("why"):
            console.print(f"fidelity (auto): {fid['plan']['why']}")
    console.print(_trials_table(doc["trials"], metric["name"], console.width))
    hidden = doc.get("trials_total", len(doc["trials"])) - len(doc["trials"])
    if hidden > 0:
        console.print(f"({hidden} earlier trials not shown: `ara status --json`, `ara export` or report.md)")


def _trials(counts: dict[str, Any]) -> str:
    extra = {k: v for k, v in counts.items() if k not in ("used", "limit")}
    return trials_line(counts["used"], counts["limit"], extra)


def _cells(t: dict[str, Any]) -> dict[str, str]:
    kind = t.get("kind", "hypothesis")
    return {
        "trial": t["id"],
        "parent": (t.get("of") or t["parent_trial"] or "-")
        + ("" if kind in ("hypothesis", "baseline") else f" {kind}"),
        "state": t["state"] + (f" ({t['pending_reason']})" if t.get("pending_reason") else ""),
        "decision": t["decision"] or "",
        "metric": _num(t["metric"]),
        "elapsed": _num(t["elapsed"], ".1f"),
        "GPU-s": _num(t["gpu_seconds"], ".0f"),
        "job": t["job_id"] or "",
        "title": t["title"],
    }


def _trials_table(trials: list[dict[str, Any]], metric: str, width: int) -> Table:
    """The trials as a table that fits `width`: ids whole, other columns up to a cap, the title
    taking what is left and cut at its end with "…"; at narrow widths job, GPU-s and elapsed go."""
    rows = [_cells(t) for t in trials]
    names = ["trial", "parent", "state", "decision", "metric", "elapsed", "GPU-s", "job", "title"]
    header = {n: Text.from_markup(metric if n == "metric" else n) for n in names}
    natural = {
        n: max([header[n].cell_len, *(Text.from_markup(r[n]).cell_len for r in rows)])
        for n in names  # cells are markup-escaped text: measure what shows
    }
    widths = {n: min(w, _CAPS.get(n, w)) for n, w in natural.items()}

    def room(columns: list[str]) -> int:  # what the title gets: each column costs 3 more (padding, rule)
        return width - sum(widths[n] for n in columns if n != "title") - (3 * len(columns) - 1)

    for optional in _OPTIONAL:
        if room(names) >= min(_TITLE_MIN, natural["title"]):
            break
        names.remove(optional)
    widths["title"] = max(5, min(natural["title"], room(names)))
    table = Table(show_edge=False, header_style="bold")
    for n in names:
        justify: JustifyMethod = "right" if n in ("elapsed", "GPU-s") else "left"
        table.add_column(header[n], width=widths[n], no_wrap=True, overflow="ellipsis", justify=justify)
    for t, cells in zip(trials, rows, strict=True):
        table.add_row(*(cells[n] for n in names), style=_STYLE.get(t["decision"] or "", ""))
    return table


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
