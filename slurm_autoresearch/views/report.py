"""Reports a researcher reads: per-trial report.md, the run's report.md and progress.png."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import budget, evidence, fidelity, transfer
from ..digest import Digest
from ..digest import read as read_digest
from ..executors.sandbox import describe
from ..monitor import tail
from ..outcome import Outcome
from ..rundir import LOG_FILE, RunDir, atomic_write_text
from ..safetext import markdown, one_line, visible
from ..trial import Decision, Trial
from .lineage import Kept, kept_changes
from .plot import progress_plot

if TYPE_CHECKING:
    from ..ledger import Ledger
    from ..spec import TaskSpec

_FENCE = "````"  # four backticks: diffs and logs may contain triple ones


def _fmt(value: float | None, spec: str = ".6g") -> str:
    return "" if value is None else format(value, spec)


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts)) if ts else ""


def write_trial_report(rundir: RunDir, spec: TaskSpec, trial: Trial, outcome: Outcome | None) -> Path:
    path = rundir.trial_dir(trial.id) / "report.md"
    atomic_write_text(path, trial_report(rundir, spec, trial, outcome))
    return path


def _md(text: str) -> str:
    """Model-written text on one markdown line: visible, no HTML, no images."""
    return markdown(one_line(text))


def _fenced(text: str) -> str:
    """A diff or log inside a code fence: visible characters, and no line that closes the fence."""
    return visible(text.rstrip()).replace(_FENCE, "` ` ` `")


def trial_report(rundir: RunDir, spec: TaskSpec, trial: Trial, outcome: Outcome | None) -> str:
    """One trial as markdown: hypothesis, decision, diff, job, resources, log tail."""
    tdir = rundir.trial_dir(trial.id)
    h = trial.hypothesis
    patch_path = tdir / "patch.diff"
    patch = patch_path.read_text(encoding="utf-8") if patch_path.exists() else ""
    metric = spec.metric.name
    lines = [
        f"# {trial.id}: {_md(trial.title)}",
        "",
        f"- decision: **{trial.decision or trial.state}**"
        + (f": {_md(trial.reason)}" if trial.reason else ""),
        f"- {metric}: {_fmt(trial.metric) or 'none'}",
        f"- parent: {trial.parent_trial or '-'} ({(trial.parent or '')[:7]}), "
        f"commit {(trial.commit or '-')[:7]}"
        + (f", ref `refs/ara/{rundir.run_id}/{trial.id}`" if trial.commit else ""),
        f"- source: {h.source}, kind {trial.kind}"
        + (f" of {trial.of}" if trial.of else "")
        + f", seed {trial.seed}, {trial.steps or spec.budget.steps} steps ({trial.fidelity} fidelity)",
    ]
    if "planned_without" in h.extra:
        missing = ", ".join(h.extra["planned_without"]) or "nothing decided meanwhile"
        on = f"; planned on {h.extra['planned_on']}" if h.extra.get("planned_on") else ""
        when = _when(h.extra.get("planned_at"))
        lines.append(f"- planned ahead at {when}, without the results of: {missing}{on}")
    ev = trial.evidence or {}
    if ev.get("candidate"):
        runs = ", ".join(f"{v:.6g}" for v in ev["candidate"])
        line = f"- evidence: runs [{runs}]"
        if ev.get("incumbent"):
            line += (
                f" vs {ev.get('incumbent_trial')} [{', '.join(f'{v:.6g}' for v in ev['incumbent'])}]: "
                f"delta {ev['delta']:+.4g}, margin {ev['margin']:.4g} ({ev['rule']}"
                + (f", sd {ev['sigma']:.4g}" if ev.get("sigma") is not None else "")
                + ")"
            )
        lines.append(line)
    if trial.holdout is not None:
        lines.append(
            f"- holdout {metric}: {trial.holdout:.6g}"
            + (f" ({ev['holdout_flag']})" if ev.get("holdout_flag") else "")
        )
    if outcome is not None:
        gpus = spec.resources.gpus_per_trial
        lines += [
            f"- job: {trial.job_id or '-'}, state {outcome.state.value}, exit code {outcome.exit_code}",
            f"- resources: {outcome.elapsed:.1f} s wall, {gpus} GPU(s), "
            f"{outcome.gpu_seconds:.0f} GPU-seconds, peak memory {_fmt(outcome.memory_gb, '.2f')} GB",
        ]
        if outcome.sandbox:
            contained = "a bwrap sandbox" if outcome.sandbox == "bwrap" else "no sandbox: NOT protected"
            lines.append(f"- trial code: {contained}")
        if trial.llm_tokens:
            lines.append(f"- model calls: {trial.llm_tokens} tokens, ${trial.llm_usd:.4f}")
        other = {k: v for k, v in outcome.metrics.items() if k != metric}
        if other:
            lines.append("- other metrics: " + ", ".join(f"{k} {v:.6g}" for k, v in sorted(other.items())))
    if trial.summary:
        lines += ["", "## Summary", "", markdown(trial.summary)]
    curve = read_digest(tdir)
    if curve is not None:
        lines += ["", "## Learning curves", "", *_curve_lines(curve)]
    lines += ["", "## Hypothesis", "", markdown(h.rationale) or "(no rationale given)"]
    if h.expected:
        lines += ["", f"Expected: {markdown(h.expected)}"]
    if h.params:
        lines += ["", "Search values: " + ", ".join(_md(f"{k} = {v}") for k, v in h.params.items())]
    if trial.decision is Decision.REJECTED and h.edits:
        lines += ["", "## Proposed edits (not applied)", ""]
        for e in h.edits:
            lines += [f"- {_md(e.path)}: replace {len(e.search)} chars with {len(e.replace)} chars"]
    lines += ["", "## Diff", "", f"{_FENCE}diff", _fenced(patch) or "(no change: the baseline)", _FENCE]
    log_tail = outcome.log_tail if outcome is not None else tail(tdir / LOG_FILE)
    if log_tail:
        lines += ["", f"## Log tail ({LOG_FILE})", "", _FENCE, _fenced(log_tail), _FENCE]
    return "\n".join(lines) + "\n"


def write_run_report(rundir: RunDir, spec: TaskSpec, ledger: Ledger, *, plot: bool = True) -> Path:
    """report.md with the trial table and learnings, and progress.png next to it (plot=False: the
    controller draws it in its own process, see `plot_apart`)."""
    meta = ledger.meta()
    trials = ledger.trials()
    metric, goal = spec.metric.name, spec.metric.goal
    counts = {d: sum(1 for t in trials if t.decision is d) for d in Decision}
    kept = [t for t in trials if t.decision is Decision.KEEP]
    kept.sort(key=lambda t: t.decided_at or 0)
    baseline = trials[0] if trials else None
    best = kept[-1] if kept else None
    gpu_s = sum(t.gpu_seconds or 0 for t in trials)
    now = time.time()
    wall, reruns = budget.wall_seconds(meta, now), budget.rerun_seconds(meta, now)
    if plot:
        progress_plot(trials, metric, goal, rundir.progress)
    lines = [
        f"# ara run {rundir.run_id}",
        "",
        f"**{spec.task.name}**: {spec.task.description}".rstrip(": "),
        "",
        f"- state: {meta.get('state')}" + (f" ({_md(meta['end_reason'])})" if meta.get("end_reason") else ""),
        f"- started {_when(meta.get('created_at'))}, wall time {wall / 60:.1f} min"
        + (f" (+ {reruns / 60:.1f} min of `ara rerun` after it ended)" if reruns else "")
        + f", {meta.get('executor')} executor x{meta.get('parallel')}, {meta.get('planner')} planner",
        f"- metric: {metric} ({goal}), min_delta {spec.metric.min_delta:g}",
        f"- trial code: {describe(meta.get('sandbox'))[1]}",
        "- decisions: " + evidence.describe(evidence.overview(trials, evidence.Rule.of(spec), best)),
    ]
    hint = budget.time_limit_hint(trials, spec.budget.trial_minutes)
    if hint:
        lines.append(f"- **hint**: {hint}")
    if spec.screening:
        saved = fidelity.savings(trials, spec.full_steps, spec.fidelity.screen_steps)
        lines.append(
            f"- multi-fidelity: screened at {spec.fidelity.screen_steps} steps, full {spec.full_steps}; "
            f"{saved.gpu_hours:.3f} GPU-hours ({saved.slot_hours:.3f} slot-hours) spent vs "
            f"{saved.full_budget_gpu_hours:.3f} ({saved.full_budget_slot_hours:.3f}) at full budget"
        )
        plan = meta.get("fidelity_plan") or {}
        if plan.get("why"):
            lines.append(f"- fidelity (auto): {_md(plan['why'])}")
    check = transfer.of_run(trials, spec)
    if check is not None:
        lines.append(f"- {check.line()}")
    elif spec.transfer.top:
        why = meta.get("transfer_skipped") or "the run has not reached it"
        lines.append(f"- transfer check at {spec.transfer.steps} steps: not run ({why})")
    if baseline is not None and baseline.metric is not None and best is not None and best.metric is not None:
        delta = best.metric - baseline.metric
        lines.append(
            f"- baseline {baseline.metric:.6g} -> best {best.metric:.6g} ({delta:+.6g}) by "
            f"{best.id}: {_md(best.title)}; branch `{meta.get('best_branch')}`"
        )
    counted = budget.counted(trials, spec.budget.trials)
    lines += [
        f"- trials: {counted} ({', '.join(f'{counts[d]} {d.value}' for d in Decision)}), "
        f"{gpu_s / 3600:.2f} GPU-hours, "
        f"model calls ${ledger.llm_totals()[0]:.4f} ({ledger.llm_totals()[1]} tokens)",
        "",
        "![progress](progress.png)",
        "",
        "## Trials",
        "",
        f"| trial | parent | kind | steps | {metric} | decision | elapsed s | title | reason |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for t in trials:
        title = _md(t.title).replace("|", "\\|")
        reason = _md(t.reason[:120]).replace("|", "\\|")
        decision = f"**{t.decision.value}**" if t.decision is Decision.KEEP else (t.decision or t.state)
        lines.append(
            f"| [{t.id}](trials/{t.id}/report.md) | {t.parent_trial or '-'} | {t.kind}"
            f"{' of ' + t.of if t.of else ''} | {t.steps or spec.budget.steps} | {_fmt(t.metric)} | "
            f"{decision} | {_fmt(t.elapsed, '.1f')} | {title} | {reason} |"
        )
    if kept:
        lines += [
            "",
            "## Kept changes, in order",
            "",
            *_kept_lines(kept_changes(trials), meta.get("best_branch")),
        ]
    flagged = _flagged(rundir, trials)
    if flagged:
        lines += ["", "## Learning curves that say something", "", *flagged]
    learnings = [f"- {t.id} {_md(t.learning)}" for t in trials if t.learning]
    if learnings:
        lines += ["", "## Learnings", "", *learnings]
    atomic_write_text(rundir.report, "\n".join(lines) + "\n")
    return rundir.report


def _curve_lines(curve: Digest) -> list[str]:
    """A digest in report.md: numbers and fixed words only (names are the task file's, cleaned)."""
    lines = [f"- flags: {', '.join(curve.flags)} ({curve.note()})" if curve.flags else "- flags: none"]
    for role, series in (("validation", curve.val), ("training", curve.train)):
        if series is None:
            continue
        better = "lower" if series.goal == "min" else "higher"
        best = f"; best {series.best[1]:.4g} at step {series.best[0]}" if series.best else ""
        points = " ".join(f"{v:.4g}@{s}" for s, v in series.points)
        lines.append(
            f"- {role} `{series.name}` ({better} is better, {series.count} points): `{points}`{best}"
        )
    return lines


def _flagged(rundir: RunDir, trials: list[Trial]) -> list[str]:
    """One line per trial whose curve digest has flags."""
    lines = []
    for t in trials:
        curve = read_digest(rundir.trial_dir(t.id)) if t.job_id else None
        if curve is not None and curve.flags:
            lines.append(f"- [{t.id}](trials/{t.id}/report.md) ({t.decision or t.state}): `{curve.line()}`")
    return lines


def _kept_lines(kept: list[Kept], branch: str | None) -> list[str]:
    """The best branch's keeps from the baseline on, then the keeps it does not hold."""
    on = [k for k in kept if k.on_best]
    lines = [f"On the best branch `{branch}`, from the baseline to the best:", ""]
    for k in on:
        merged = f" (merges {k.merges})" if k.merges else ""
        lines.append(f"1. {k.trial.id} {_md(k.trial.title)}: {_fmt(k.trial.metric)}{merged}")
    off = [k for k in kept if not k.on_best]
    if off:
        lines += ["", "Kept when decided, then superseded and never merged:", ""]
        lines += [
            f"- {k.trial.id} {_md(k.trial.title)}: {_fmt(k.trial.metric)}, not on the best branch"
            for k in off
        ]
    return lines


def plot_apart(run_dir: Path, timeout_s: float = 300.0) -> str:
    """progress.png drawn by a child process: matplotlib (40 MB) never loads in the controller.
    Returns "" or why the figure was not drawn."""
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "slurm_autoresearch.views.report", str(run_dir)],
            capture_output=True,
            text=True,
            timeout=timeout_s,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return "" if proc.returncode == 0 else (proc.stderr.strip().splitlines() or ["failed"])[-1]


def _plot_main(run_dir: Path) -> None:
    from ..ledger import Ledger
    from ..task import read_spec

    rundir = RunDir(run_dir)
    spec = read_spec(rundir.task_copy)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        progress_plot(ledger.trials(), spec.metric.name, spec.metric.goal, rundir.progress)
    finally:
        ledger.close()


if __name__ == "__main__":
    _plot_main(Path(sys.argv[1]))
