"""The verdicts on what the probe saw, probe.json on disk, and the metric check of `--check`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .findings import SCHEMA, Findings
from .output import lines_of, rank

PROBE_FILE = "probe.json"


def ms(seconds: float) -> str:
    """A duration in words a person reads: 2.4 s, 96 ms, 1.4 ms, 7.6 us."""
    if seconds >= 1:
        return f"{seconds:.1f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.2g} ms" if seconds >= 1e-5 else f"{seconds * 1e6:.2g} us"


def trial_seconds(findings: Findings, steps: int) -> float | None:
    per = findings.seconds_per_step or findings.seconds_per_step_at_most
    if per is None or findings.startup_seconds is None:
        return None
    return findings.startup_seconds + steps * per


NO_SEED = "ARA_SEED changes nothing: noise cannot be measured, keeps are single-run"


def verdicts(
    findings: Findings, steps: int | None = None, minutes: float | None = None
) -> list[tuple[str, str]]:
    """(level, line) per finding: ok, note, WARN or FAIL."""
    out: list[tuple[str, str]] = []
    if findings.failure:
        first, *log = findings.failure.splitlines()
        out.append(("FAIL", first if findings.metrics else f"the command failed: {first}"))
        out += [("log", line) for line in [x for x in lines_of("\n".join(log)) if x.strip()][-4:]]
        if not findings.metrics:
            return out
    metric = findings.metric
    seen = ", ".join(list(findings.metrics) + [n for n in findings.printed if rank(n) > 0][:8]) or "nothing"
    if metric is None:
        out.append(
            (
                "FAIL",
                f"no metric ara can read (seen: {seen}): print a '---' block, write "
                "ARA_METRICS_PATH, or set [metric] pattern",
            )
        )
    elif metric.get("value") is None:
        out.append(("FAIL", f"metric {metric['name']!r} is not in what the runs reported (seen: {seen})"))
    else:
        how = f" through [metric] pattern '{metric['pattern']}'" if metric.get("pattern") else ""
        others = [n for n in findings.metrics if n != metric["name"]]
        also = f" (also: {', '.join(others)})" if others else ""
        where = f"in {metric['source']}" if metric["source"].startswith("the ") else metric["source"]
        out.append(("ok", f"metric {metric['name']} = {metric['value']:.6g}, {where}{how}{also}"))
    if findings.seed_changes_result is False:
        out.append(("WARN", f"{NO_SEED}; seed your RNGs from ARA_SEED"))
    elif findings.seed_changes_result:
        rep = {
            True: "the same seed repeats it exactly",
            False: "the same seed does NOT repeat it (nondeterministic)",
            None: "repeat unknown",
        }[findings.repeats_identical]
        out.append(("ok", f"ARA_SEED changes the result; {rep}"))
    if findings.stops_at_steps is False:
        out.append(("WARN", f"does not stop at ARA_STEPS ({findings.steps_evidence}): pass it to the code"))
    elif findings.stops_at_steps:
        out.append(("ok", f"stops at ARA_STEPS ({findings.steps_evidence})"))
    if findings.seconds_per_step:
        out.append(
            (
                "ok",
                f"a step takes about {ms(findings.seconds_per_step)} after "
                f"{ms(findings.startup_seconds or 0)} of start-up",
            )
        )
    elif findings.seconds_per_step_at_most:
        out.append(
            (
                "note",
                f"a step takes under {ms(findings.seconds_per_step_at_most)}; start-up about "
                f"{ms(findings.startup_seconds or 0)}",
            )
        )
    if steps and minutes:
        expect = trial_seconds(findings, steps)
        if expect is not None and expect > minutes * 60 * 0.8:
            out.append(
                (
                    "WARN",
                    f"{steps} steps should take about {ms(expect)}: over [budget] trial_minutes = "
                    f"{minutes:g}",
                )
            )
    if findings.freeze:
        out.append(("ok", f"read and never written: {', '.join(findings.freeze)} (freeze)"))
    if findings.hidden:
        out.append(
            ("note", f"read only by the evaluation: {', '.join(findings.hidden)} (hidden: an answer key?)")
        )
    if findings.created:
        out.append(
            (
                "note",
                f"writes {', '.join(findings.created[:6])}" + (" ..." if len(findings.created) > 6 else ""),
            )
        )
    if findings.reads is None:
        out.append(("note", "reads not traced (access times do not move on this filesystem)"))
    if findings.config:
        out.append(
            (
                "ok",
                f"{findings.config['file']}: {len(findings.config['space'])} values proposed as "
                "[search.space]",
            )
        )
    return out


def probe_path(root: Path) -> Path:
    return root / PROBE_FILE


def write_findings(root: Path, findings: Findings) -> Path:
    from ..rundir import write_json

    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")  # as a run root: never in the user's `git status`
    write_json(probe_path(root), findings.to_dict())
    return probe_path(root)


def read_findings(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(probe_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def metric_problem(
    data: dict[str, Any], command: str, evaluation: str | None, metric: str, pattern: str | None, code: str
) -> str | None:
    """Why the task's metric is not among what the probe of the same command and code saw; None
    when it is, or when the probe was of something else."""
    if data.get("command") != command or data.get("eval") != evaluation or data.get("code") != code:
        return None
    if data.get("failure") and not data.get("metrics") and not data.get("printed"):
        return None  # the run failed: nothing to compare with (the probe said so)
    probed, where = f"the probe of {command!r}", f".ara/{PROBE_FILE}"
    if pattern:
        from ..metrics import pattern_metric

        if pattern_metric(data.get("stream", ""), pattern) is None:
            return f"[metric] pattern {pattern!r} matches nothing in what {probed} printed ({where})"
        return None
    if metric in (data.get("metrics") or {}):
        return None
    printed = (data.get("printed") or {}).get(metric)
    if printed:
        return (
            f"[metric] name {metric!r} is printed as `{printed['line']}`, which trials do not read; "
            f"add [metric] pattern = '{printed['pattern']}' (from {probed}, {where})"
        )
    seen = ", ".join(list(data.get("metrics") or {}) + [n for n in data.get("printed") or {} if rank(n) > 0])
    return (
        f"[metric] name {metric!r} was never seen by {probed} (it saw: {seen or 'no metric'}; {where}); "
        "fix the name, or probe again with `ara doctor` after changing the code"
    )
