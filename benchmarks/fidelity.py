"""Multi-fidelity on the bundled example: GPU-hours and final metric, screened vs full budget.

    python benchmarks/fidelity.py [--trials 12] [--full-steps 1600] [--screen-steps 200]
                                  [--executor slurm|local]

Runs the example twice from fresh copies with the same trial budget (hypotheses) and planner
seed: once every hypothesis at the full budget, once screened at `--screen-steps` with the best
of every 4 promoted to the full budget. (The example's jobs spend about 9 s starting up, so at
its default 400 steps a screen saves little; longer full budgets show what screening is for.)
Prints GPU-hours (sacct's AllocTRES on Slurm) or slot-hours (job wall time, locally), jobs, and
the best metric of each, plus what the screened run estimates the same hypotheses would have cost
at full budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mil-stain"
ARA = [sys.executable, "-m", "slurm_autoresearch.cli"]


def fresh_copy(dest: Path, example: Path = EXAMPLE) -> Path:
    ignore = shutil.ignore_patterns(".ara", "predictions.json", "__pycache__")
    shutil.copytree(example, dest / example.name, ignore=ignore)
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "example"],
    ):
        subprocess.run(["git", *args], cwd=dest, check=True)
    return dest / example.name / "task.toml"


def submit(task: Path, settings: list[str]) -> float:
    """`ara submit` of the task with `--set` settings; its wall seconds (a failure ends the benchmark)."""
    sets = [x for s in settings for x in ("--set", s)]
    start = time.time()
    out = subprocess.run([*ARA, "submit", str(task), *sets], cwd=task.parent, capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"ara submit failed ({out.returncode}):\n{out.stdout[-3000:]}\n{out.stderr[-2000:]}")
    return time.time() - start


def run(task: Path, settings: list[str]) -> dict:
    wall_s = submit(task, settings)
    status = subprocess.run(
        [*ARA, "status", "--json"], cwd=task.parent, capture_output=True, text=True, check=True
    )
    doc = json.loads(status.stdout)
    doc["wall_s"] = wall_s
    return doc


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--full-steps", type=int, default=1600)
    parser.add_argument("--screen-steps", type=int, default=200)
    parser.add_argument("--executor", choices=["slurm", "local"], default="slurm")
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ara-fidelity-"))
    common = [
        f"run.executor={args.executor}",
        "run.planner=offline",
        f"run.parallel={args.parallel}",
        f"budget.trials={args.trials}",
        f"budget.steps={args.full_steps}",
        "budget.trial_minutes=10",
        "slurm.poll_seconds=1.0",
    ]
    if args.executor == "slurm":
        common.append("resources.gpus_per_trial=1")
    else:
        common.append(f"run.parallel={min(args.parallel, 2)}")
    full = run(fresh_copy(tmp / "full"), common)
    screened = run(
        fresh_copy(tmp / "screened"),
        [
            *common,
            f"fidelity.screen_steps={args.screen_steps}",
            "fidelity.round_size=4",
            "fidelity.promote=1",
        ],
    )
    unit = "GPU-hours" if args.executor == "slurm" else "slot-hours"

    def spent(doc: dict) -> float:
        if args.executor == "slurm":
            return doc["budget"]["gpu_seconds"]["used"] / 3600
        return sum(t["elapsed"] or 0 for t in doc["trials"]) / 3600

    for name, doc in (
        (f"full budget ({args.full_steps} steps)", full),
        (f"screened at {args.screen_steps} steps", screened),
    ):
        inc = doc["incumbent"]
        jobs = sum(1 for t in doc["trials"] if t["job_id"])
        print(
            f"{name}: {doc['budget']['trials']['used']} hypotheses, {jobs} jobs, {spent(doc):.4f} {unit}, "
            f"best {doc['metric']['name']} {inc['metric']:.4f} by {inc['trial']} ({inc['title']}), "
            f"{doc['wall_s']:.0f} s"
        )
    fid = screened["fidelity"]
    key = "gpu_hours" if args.executor == "slurm" else "slot_hours"
    print(
        f"screened run's own estimate: {fid[key]:.4f} {unit} spent vs {fid['full_budget_' + key]:.4f} for "
        f"the same hypotheses at full budget; {fid['screened']} screened, {fid['promoted']} promoted"
    )
    print(f"saved against the full-budget run: {1 - spent(screened) / spent(full):.0%} of its {unit}")
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
