"""Benchmark: the example through real Slurm job arrays; prints the figures the Slurm issue asks for.

    python scripts/bench_slurm.py [--trials 12] [--parallel 4]

Needs a cluster (`scripts/slurm start`). Runs the example with the Slurm executor, gpu:1 per trial:
the run's sacct lines, the most jobs running at once (from sacct's own Start/End), GPU-hours,
sacct calls per minute (twice, at two trial counts: it must not grow with trials), the time from
a job's end to its decision; then the same short sequential run on both executors, whose metrics
and decisions must agree.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.rundir import RunDir, find_run

ROOT = Path(__file__).resolve().parents[1]
TASK = ROOT / "examples" / "mil-stain" / "task.toml"
RUNS = ROOT / "examples" / "mil-stain" / ".ara"


def submit(*sets: str) -> tuple[RunDir, float]:
    args = [sys.executable, "-m", "slurm_autoresearch.cli", "submit", str(TASK)]
    for item in sets:
        args += ["--set", item]
    start = time.time()
    out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    run_id = next(line.split("run id: ", 1)[1].strip() for line in out.splitlines() if "run id: " in line)
    return find_run(run_id, RUNS), time.time() - start


def sacct_rows(job_name: str) -> list[list[str]]:
    out = subprocess.run(
        [
            "sacct",
            "-X",
            "-n",
            "-P",
            "--name",
            job_name,
            "-o",
            "JobID,State,Start,End,Elapsed,AllocTRES,NodeList",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [line.split("|") for line in out.splitlines() if line]


def most_at_once(rows: list[list[str]]) -> int:
    spans = [
        (datetime.fromisoformat(r[2]), datetime.fromisoformat(r[3]))
        for r in rows
        if "T" in r[2] and "T" in r[3]
    ]
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def slurm_run(trials: int, parallel: int, show: bool) -> float:
    rundir, wall = submit(
        "run.executor=slurm",
        f"run.parallel={parallel}",
        "resources.gpus_per_trial=1",
        f"budget.trials={trials}",
    )
    ledger = Ledger.open(rundir.ledger, readonly=True)
    meta, done = ledger.meta(), ledger.trials()
    ledger.close()
    rows = sacct_rows(f"ara-{rundir.run_id}")
    minutes = (meta["ended_at"] - meta["created_at"]) / 60
    per_minute = meta["sacct_calls"] / minutes
    latency = [t.decided_at - t.job_ended_at for t in done if t.decided_at and t.job_ended_at]
    if show:
        print(f"run {rundir.run_id}: {trials} trials, parallel {parallel}, wall {wall:.0f} s")
        print("sacct -X --name " + f"ara-{rundir.run_id}:")
        for row in rows:
            print("   " + "|".join(row))
        arrays = {r[0].split("_")[0] for r in rows}
        in_arrays = sum(1 for r in rows if "_" in r[0])
        print(
            f"jobs {len(rows)} in {len(arrays)} submissions, {in_arrays} of them array tasks; "
            f"most running at once: {most_at_once(rows)}"
        )
        gpu_h = sum(t.gpu_seconds or 0 for t in done) / 3600
        print(f"GPU-hours accounted: {gpu_h:.4f} ({sum(t.gpu_seconds or 0 for t in done):.0f} GPU-s)")
        kept = [t.id for t in done if t.decision and t.decision.value == "keep"]
        best = max((t for t in done if t.metric is not None), key=lambda t: t.metric or 0)
        print(f"kept {kept}; best macro_f1 {best.metric:.4f} by {best.id}")
        print(
            f"job end -> decision: mean {statistics.mean(latency):.2f} s, max {max(latency):.2f} s "
            "(one sacct call per [slurm] poll_seconds, 5 s by default)"
        )
    print(f"sacct calls: {meta['sacct_calls']} in {minutes:.2f} min = {per_minute:.1f}/min ({trials} trials)")
    return per_minute


def decisions(executor: str) -> list[tuple[str, float | None, str]]:
    rundir, _ = submit(f"run.executor={executor}", "run.parallel=1", "budget.trials=6")
    ledger = Ledger.open(rundir.ledger, readonly=True)
    out = [
        (t.title, round(t.metric, 6) if t.metric is not None else None, str(t.decision))
        for t in ledger.trials()
    ]
    ledger.close()
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    slurm_run(args.trials, args.parallel, show=True)
    slurm_run(max(4, args.trials // 2), args.parallel, show=False)
    local, slurm = decisions("local"), decisions("slurm")
    print("sequential run, local vs slurm (title, macro_f1, decision):")
    for a, b in zip(local, slurm, strict=True):
        print(f"   {'same' if a == b else 'DIFF'}  {a[0][:50]:50s} {a[1]} {a[2]:8s} | {b[1]} {b[2]}")
    return 0 if local == slurm else 1


if __name__ == "__main__":
    sys.exit(main())
