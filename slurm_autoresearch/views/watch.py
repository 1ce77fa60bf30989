"""`ara watch`: a live terminal view of a run, read from the ledger and bounded log tails only."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.progress_bar import ProgressBar
from rich.table import Table

from ..ledger import Ledger
from ..monitor import tail
from ..rundir import LOG_FILE, RunDir
from ..safetext import map_text, one_line
from .status import status_document

SHOWN = 12  # trials of the run the view is built from, besides the live ones
_NUMBER = r"[-+]?(?:\d+\.?\d*(?:[eE][-+]?\d+)?|nan|inf)"
_STEP = re.compile(rf"step\s+(\d+)(?:\s*/\s*\d+)?\b.*?\bloss\b\s*[:=]?\s*({_NUMBER})", re.I)
_STYLE = {"keep": "bold green", "discard": "dim", "crash": "red", "rejected": "yellow", "repeat": "cyan"}
_LIVE = ("running", "queued", "submitting", "planned", "waiting")


def last_step(text: str) -> str:
    """The last `step N ... loss X` the training printed, as `step N loss X`."""
    found = _STEP.findall(text)
    return f"step {found[-1][0]} loss {found[-1][1]}" if found else ""


def snapshot(rundir: RunDir, now: float | None = None) -> dict[str, Any]:
    """The status document of the live and latest trials, with each running trial's last step."""
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        doc = status_document(rundir, ledger, now=now, limit=SHOWN)
    finally:
        ledger.close()
    for t in doc["trials"]:
        if t["state"] == "running":  # 2 KiB of its log: the view never reads more than the monitor
            t["progress"] = last_step(tail(rundir.trial_dir(t["id"]) / LOG_FILE, 2048))
    doc["now"] = time.time() if now is None else now
    return doc


def _bar(label: str, used: float, limit: float | None, shown: str) -> tuple[str, RenderableType, str]:
    if not limit:
        return label, "", shown
    return label, ProgressBar(total=limit, completed=min(used, limit), width=30), f"{shown} of {limit:g}"


def _shown(text: str) -> str:
    return escape(one_line(text))


def render(doc: dict[str, Any]) -> RenderableType:
    # Model-written titles, reasons and log lines: no markup and no escape sequence reaches the
    # screen (the trial rows below are cleaned as they are shown; there may be thousands).
    doc = {**map_text({k: v for k, v in doc.items() if k != "trials"}, one_line), "trials": doc["trials"]}
    run, budget, metric, now = doc["run"], doc["budget"], doc["metric"], doc["now"]
    minutes = budget["wall_seconds"]["used"] / 60
    head = (
        f"[bold]{escape(run['id'])}[/] ({escape(str(run['task']))}): [bold]{run['state']}[/]"
        f"{', ' + escape(run['reason']) if run['reason'] else ''} | {run['executor']} x{run['parallel']}, "
        f"{run['planner']} planner | {minutes:.1f} min"
        + (f" | [yellow]{escape(run['watch'])}[/]" if "degraded" in (run.get("watch") or "") else "")
    )
    inc = doc["incumbent"]
    best = (
        f"best {metric['name']} [bold]{inc['metric']:.6g}[/] by {inc['trial']}: {escape(inc['title'][:70])}"
        if inc and inc["metric"] is not None
        else "no incumbent yet"
    )
    rule = doc.get("decisions") or {}
    if rule.get("margin_one_run") is not None:
        best += f" (a new run must beat it by {rule['margin_one_run']:.4g}, {rule['rule']} rule)"
    elif rule.get("margin_two_runs") is not None:
        best += f" (two new runs must beat it by {rule['margin_two_runs']:.4g}, {rule['rule']} rule)"
    bars = Table.grid(padding=(0, 1))
    for row in (
        _bar("trials", budget["trials"]["used"], budget["trials"]["limit"], str(budget["trials"]["used"])),
        _bar(
            "GPU-hours",
            budget["gpu_seconds"]["used"] / 3600,
            (budget["gpu_seconds"]["limit"] or 0) / 3600,
            f"{budget['gpu_seconds']['used'] / 3600:.2f}",
        ),
        _bar(
            "LLM $", budget["llm_usd"]["used"], budget["llm_usd"]["limit"], f"{budget['llm_usd']['used']:.4f}"
        ),
        _bar(
            "tokens",
            budget["llm_tokens"]["used"],
            budget["llm_tokens"]["limit"],
            str(budget["llm_tokens"]["used"]),
        ),
        _bar(
            "wall h",
            budget["wall_seconds"]["used"] / 3600,
            (budget["wall_seconds"]["limit"] or 0) / 3600,
            f"{budget['wall_seconds']['used'] / 3600:.2f}",
        ),
    ):
        bars.add_row(*row)
    slots = Table(title="running", title_justify="left", show_edge=False, header_style="bold", expand=True)
    for col, width in (("trial", 6), ("job", 8), ("elapsed", 7), ("progress", 20), ("hypothesis", None)):
        slots.add_column(col, no_wrap=True, overflow="ellipsis", min_width=width)
    live = [t for t in doc["trials"] if t["state"] == "running"]
    for t in live:
        began = t.get("job_started_at") or t.get("started_at")
        elapsed = f"{now - began:.0f} s" if began else ""
        slots.add_row(t["id"], t["job_id"] or "", elapsed, _shown(t.get("progress", "")), _shown(t["title"]))
    waiting = [t for t in doc["trials"] if t["state"] in _LIVE and t["state"] != "running"]
    queue = ", ".join(
        f"{t['id']} {t['state']}" + (f" ({_shown(t['pending_reason'])})" if t.get("pending_reason") else "")
        for t in waiting
    )
    decided = sorted(
        (t for t in doc["trials"] if t["decision"]), key=lambda t: t.get("job_ended_at") or 0, reverse=True
    )
    recent = Table(
        title="last decisions", title_justify="left", show_edge=False, header_style="bold", expand=True
    )
    for col, width in (("trial", 6), ("decision", 8), (metric["name"], 10), ("reason", None)):
        recent.add_column(col, no_wrap=True, overflow="ellipsis", min_width=width)
    for t in sorted(decided[:6], key=lambda t: t["id"], reverse=True):
        value = "" if t["metric"] is None else f"{t['metric']:.6g}"
        recent.add_row(
            t["id"], t["decision"], value, _shown(t["reason"]), style=_STYLE.get(t["decision"], "")
        )
    counts = doc["counts"]
    tally = ", ".join(
        f"{counts[k]} {k}" for k in ("keep", "discard", "crash", "rejected", "repeat") if counts.get(k)
    )
    return Group(
        head,
        best,
        bars,
        slots if live else "[dim]no trial running[/]",
        f"queue: {queue}" if queue else "[dim]queue empty[/]",
        recent,
        f"[dim]{tally}; refreshed {time.strftime('%H:%M:%S', time.localtime(now))}; "
        "Ctrl-C leaves the run alone[/]",
    )


def watch(
    rundir: RunDir,
    *,
    interval: float = 2.0,
    once: bool = False,
    console: Console | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Refresh until the run is no longer running (or Ctrl-C); returns the last snapshot."""
    console = console or Console()
    doc = snapshot(rundir)
    if once:
        console.print(render(doc))
        return doc
    with Live(render(doc), console=console, auto_refresh=False) as live:
        while doc["run"]["state"] in ("created", "running"):
            sleep(interval)
            doc = snapshot(rundir)
            live.update(render(doc), refresh=True)
    return doc
