"""A run directory with a synthetic ledger of N trials, for benchmarks of the read side.

python benchmarks/big_ledger.py DIR [--trials 10000]
"""

from __future__ import annotations

import argparse
import io
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from rich.console import Console  # noqa: E402

from slurm_autoresearch.evidence import Rule  # noqa: E402
from slurm_autoresearch.hypothesis import Edit, Hypothesis  # noqa: E402
from slurm_autoresearch.ledger import Ledger  # noqa: E402
from slurm_autoresearch.rundir import RunDir, atomic_write_text  # noqa: E402
from slurm_autoresearch.trial import Decision, TrialKind, TrialState  # noqa: E402

TASK = """\
[task]
name = "big"
command = "python train.py"
eval = "python evaluate.py"

[metric]
name = "score"
goal = "max"

[budget]
steps = 100
trials = {trials}

[noise]
repeats = 5

[surface]
allow = ["train.py"]
freeze = ["evaluate.py"]
"""


def build(root: Path, trials: int, seed: int = 0, running: int = 4) -> RunDir:
    """A run `big-bench` under root: baseline seeds, then hypotheses with realistic decisions;
    the last `running` trials are still running, with logs."""
    rng = random.Random(seed)
    rundir = RunDir.create(root, "big-bench")
    atomic_write_text(rundir.task_copy, TASK.format(trials=trials))
    ledger = Ledger.open(rundir.ledger)
    now = time.time() - trials * 60
    ledger.set_meta(
        run_id=rundir.run_id,
        task="big",
        metric="score",
        goal="max",
        executor="slurm",
        planner="anthropic",
        summarizer="anthropic",
        parallel=running,
        trial_budget=trials,
        gpu_hours=trials * 0.2,
        llm_usd=trials * 0.05,
        llm_tokens=None,
        wall_hours=None,
        state="running",
        created_at=now,
        base_commit="0" * 40,
        best_branch="ara/big-bench/best",
        watch="sacct",
        frozen={},
        rule=Rule("max", 0.0, True, 0.01, 4, 5, 100, 100, 0).to_dict(),
    )
    best, best_id = 0.5, "T0001"
    edit = Edit("train.py", "lr = 0.01", "lr = 0.02")
    with ledger.conn:  # one transaction: building 10,000 rows one commit each takes minutes
        ledger._tx = _no_tx  # type: ignore[method-assign]
        for i in range(1, trials + 1):
            kind = TrialKind.BASELINE if i == 1 else TrialKind.REPEAT if i <= 5 else TrialKind.HYPOTHESIS
            h = Hypothesis(
                f"idea {i}: change lr and more " + "x" * rng.randint(0, 60), "why " * 20, edits=(edit,)
            )
            t = ledger.add_trial(
                h,
                parent="0" * 40,
                parent_trial=best_id if i > 1 else None,
                now=now + i * 60,
                kind=kind,
                of="T0001" if kind is TrialKind.REPEAT else None,
                commit=f"{i:040x}",
                seed=i - 1 if i <= 5 else 0,
                steps=100,
            )
            if i > trials - running:
                # Rows written as they stand (no steps, no events): the product writes through Trials.
                live = dict(state=TrialState.RUNNING, job_id=f"{1000 + i}_0", started_at=time.time() - 30)
                ledger._write(t, now, "", None, live)
                continue
            metric = rng.gauss(best - 0.01, 0.01) if rng.random() > 0.05 else None
            if metric is None:
                decision = Decision.CRASH
            elif kind is TrialKind.REPEAT:
                decision = Decision.REPEAT
            elif metric > best + 0.02 or i == 1:
                decision, best, best_id = Decision.KEEP, metric, t.id
            else:
                decision = Decision.DISCARD
            decided = dict(
                state=TrialState.DONE,
                decision=decision,
                metric=metric,
                job_id=f"{1000 + i}_0",
                job_state="completed" if metric is not None else "failed",
                elapsed=50.0,
                gpu_seconds=50.0,
                reason="beats the incumbent" if decision is Decision.KEEP else "does not beat the incumbent",
                learning=f"idea {i}: score {metric} -> {decision}",
                decided_at=now + i * 60 + 50,
                finished_at=now + i * 60 + 50,
                llm_usd=0.01,
                llm_tokens=2000,
            )
            ledger._write(t, now + i * 60 + 50, "decided", None, decided)
    ledger.close()
    for i in range(trials - running + 1, trials + 1):
        log = rundir.trial_dir(f"T{i:04d}") / "train.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(f"step {s}/100 loss {1 / (s + 1):.4f}\n" for s in range(0, 60, 5)))
    return rundir


class _no_tx:
    """The builder's single outer transaction stands in for the ledger's per-call ones."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


def timed(command: list[str], repeats: int = 3) -> float:
    """Best wall time of a CLI command, as a user on a login node sees it."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        best = min(best, time.perf_counter() - start)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", type=Path, nargs="?", help="where to build it (default: a temp dir)")
    parser.add_argument("--trials", type=int, default=10_000)
    args = parser.parse_args()
    root = args.dir or Path(tempfile.mkdtemp(prefix="ara-big-"))
    start = time.time()
    rundir = build(root, args.trials)
    print(f"{rundir.path}: {args.trials} trials built in {time.time() - start:.1f} s")
    ara = [sys.executable, "-m", "slurm_autoresearch.cli"]
    where = ["big-bench", "--root", str(root)]
    figures = {
        "ara --help": timed([*ara, "--help"]),
        "ara status": timed([*ara, "status", *where]),
        "ara status --json (every trial)": timed([*ara, "status", "--json", *where]),
        "ara watch --once": timed([*ara, "watch", "--once", *where]),
        "ara export (csv)": timed([*ara, "export", *where], repeats=1),
        "ara status --all": timed([*ara, "status", "--all", "--root", str(root)]),
    }
    from slurm_autoresearch.views.watch import render, snapshot  # in-process: one refresh of the live view

    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        Console(file=io.StringIO(), width=140).print(render(snapshot(rundir)))
        best = min(best, time.perf_counter() - t)
    figures["one ara watch refresh (in the running view)"] = best
    for name, seconds in figures.items():
        print(f"{name}: {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
