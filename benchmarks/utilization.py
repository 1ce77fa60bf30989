"""Slot utilization: ara's continuous scheduling against a batch-and-wait loop, on the same trials.

    python benchmarks/utilization.py [--executor slurm|local] [--trials 48] [--slots 4]
        [--low 15] [--high 45] [--delay 3] [--seed 1]

The synthetic task's trials hold a slot for seeded random durations (uniform in [low, high]
seconds) and never change the score, so every schedule runs the same trials. Each configuration
is a real controller process (benchmarks/synthetic.py drive): schedule continuous (ara's default,
hypotheses planned ahead) and batch (every job of a round ends before the next is planned), each
with the offline planner answering at once and behind an API that takes --delay seconds a call.
Utilization is busy slot-seconds over slots x wall time; on Slurm from sacct's Start and End of
each job (the allocation), on the local executor from the runner's clock. Also printed: job end to
decision, decision to the next job's start (its runner, i.e. after sbatch, scheduling and Python
start), sacct calls per minute, and the controller's CPU time and peak RSS.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.synthetic import durations, run_driver, sleepy_task, trials_of

Span = tuple[float, float]


def sacct_spans(job_ids: list[str]) -> dict[str, Span]:
    """Start and End of each job's allocation, as sacct records them (whole seconds)."""
    arrays = ",".join(sorted({j.split("_")[0] for j in job_ids}))
    out = subprocess.run(
        ["sacct", "-X", "-n", "-P", "-o", "JobID,Start,End", "-j", arrays],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    spans = {}
    for line in out.splitlines():
        job, start, end = line.split("|")
        if start[:1].isdigit() and end[:1].isdigit():
            spans[job] = (datetime.fromisoformat(start).timestamp(), datetime.fromisoformat(end).timestamp())
    return spans


def spans_of(trials: list[Any], executor: str) -> dict[str, Span]:
    if executor == "slurm":
        by_job = sacct_spans([t.job_id for t in trials if t.job_id])
        return {t.id: by_job[t.job_id] for t in trials if t.job_id in by_job}
    return {t.id: (t.job_started_at, t.job_ended_at) for t in trials if t.job_started_at and t.job_ended_at}


def utilization(spans: list[Span], slots: int, start: float, end: float) -> float:
    busy = sum(max(0.0, min(e, end) - max(s, start)) for s, e in spans)
    return busy / (slots * (end - start))


def measure(report: dict[str, Any], executor: str, slots: int) -> dict[str, Any]:
    trials, meta, _ = trials_of(report)
    spans = spans_of(trials, executor)
    base = trials[0]
    first, last = min(s for s, _ in spans.values()), max(e for _, e in spans.values())
    search = [spans[t.id] for t in trials[1:] if t.id in spans]
    # A hypothesis that ran beside the baseline and ended first waits for it by design: that wait
    # is evidence still missing, not the controller's latency, and is counted apart.
    decided = [t for t in trials if t.job_ended_at and t.decided_at]
    beside = [t for t in decided[1:] if t.job_ended_at < (base.decided_at or 0)]
    ends = [t.decided_at - t.job_ended_at for t in decided if t not in beside]
    starts = sorted(t.job_started_at for t in trials if t.job_started_at)
    refill = []
    for t in trials[1:]:
        later = [s for s in starts if s >= (t.decided_at or 0)]
        if later and t.decided_at:
            refill.append(later[0] - t.decided_at)
    minutes = (report["ended"] - report["started"]) / 60
    return {
        "trials": len(trials),
        "search": utilization(search, slots, spans[base.id][1], last),
        "whole": utilization(list(spans.values()), slots, first, last),
        "wall_s": last - first,
        "end_to_decision": ends,
        "beside": len([t for t in trials[1:] if (t.submitted_at or 0) < (base.decided_at or 0)]),
        "waited": len(beside),
        "decision_to_start": refill,
        "sacct_per_min": float(meta.get("sacct_calls", 0)) / minutes if minutes else 0.0,
        "cpu_s": report["cpu_s"],
        "planner_cpu_s": report["planner_cpu_s"],
        "peak_rss_mb": report["peak_rss_mb"],
        "state": report["state"],
    }


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    mean, median = statistics.fmean(values), statistics.median(values)
    return f"mean {mean:.2f} / median {median:.2f} / max {max(values):.2f} s"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--executor", choices=["slurm", "local"], default="slurm")
    parser.add_argument("--trials", type=int, default=48)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--low", type=float, default=15.0)
    parser.add_argument("--high", type=float, default=45.0)
    parser.add_argument("--delay", type=float, default=3.0, help="seconds per call of the slow planner")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--only", choices=["fast", "slow"], help="one planner speed only")
    args = parser.parse_args()
    times = durations(args.trials, args.low, args.high, args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="ara-utilization-"))
    print(
        f"{args.executor} executor, {args.slots} slots, {args.trials} trials of {args.low:g}-{args.high:g} s "
        f"(seed {args.seed}, {sum(times):.0f} slot-s of work); runs under {tmp}"
    )
    delays = {"fast": 0.0, "slow": args.delay}
    for speed, delay in delays.items():
        if args.only and speed != args.only:
            continue
        for schedule in ("continuous", "batch"):
            name = f"{speed}-{schedule}"
            task = sleepy_task(
                tmp / name, times, executor=args.executor, parallel=args.slots, schedule=schedule
            )
            m = measure(run_driver(task, tmp / f"{name}.json", delay), args.executor, args.slots)
            planner = "planner answers at once" if not delay else f"planner takes {delay:g} s a call"
            print(f"\n{schedule} schedule, {planner}: {m['trials']} trials, {m['state']}")
            print(
                f"  utilization: search phase {m['search']:.3f}, whole run {m['whole']:.3f} "
                f"({m['wall_s']:.0f} s from the first job's start to the last one's end)"
            )
            print(
                f"  beside the baseline: {m['beside']} started, {m['waited']} ended before it and "
                "waited for its result"
            )
            print(f"  job end -> decision (the rest): {_stats(m['end_to_decision'])}")
            print(f"  decision -> next job running: {_stats(m['decision_to_start'])}")
            print(
                f"  controller: {m['cpu_s']:.1f} CPU-s ({m['planner_cpu_s']:.1f} in the planner), "
                f"peak RSS {m['peak_rss_mb']:.0f} MB; sacct {m['sacct_per_min']:.1f} calls/min"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
