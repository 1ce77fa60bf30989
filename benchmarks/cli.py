"""Wall time of `ara --help`, `ara status` and `ara status --json` on a large ledger, against targets.

    python benchmarks/cli.py [--trials 10000] [--runs 5]

Builds a run of N synthetic trials with benchmarks/big_ledger.py's builder (four of them still
running, with logs), then times each command as a user on a login node sees it: a fresh process
of the installed `ara` script, one untimed warm-up run, then the median of `--runs` runs. Prints a
table with the targets (`--help` under 0.3 s, `status` under 0.5 s) and PASS or FAIL; exits 1
when one fails. `status --json` prints every trial (9 MB at 10,000) and has no target: its time
is shown for scripts that read it.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.big_ledger import build  # noqa: E402

HELP_TARGET_S = 0.3
STATUS_TARGET_S = 0.5


def ara_command() -> list[str]:
    """The console script users run (its entry-point start-up is part of what they wait for)."""
    script = Path(sys.executable).parent / "ara"
    if script.exists():
        return [str(script)]
    found = shutil.which("ara")
    return [found] if found else [sys.executable, "-m", "slurm_autoresearch.cli"]


def median_time(command: list[str], runs: int) -> float:
    """Median wall time of a fresh process; the warm-up run pays for byte-compiling and a cold cache."""
    subprocess.run(command, capture_output=True, check=True)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(command, capture_output=True, check=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per command (median)")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="ara-cli-"))
    try:
        start = time.perf_counter()
        build(root, args.trials)
        print(f"ledger of {args.trials} trials built in {time.perf_counter() - start:.1f} s")
        ara = ara_command()
        where = ["big-bench", "--root", str(root)]
        rows: list[tuple[str, list[str], float | None]] = [
            ("ara --help", [*ara, "--help"], HELP_TARGET_S),
            ("ara status", [*ara, "status", *where], STATUS_TARGET_S),
            ("ara status --json", [*ara, "status", "--json", *where], None),
        ]
        failed = 0
        print(f"{'command':<20} {'median':>8} {'target':>8}  result   ({args.runs} runs, {ara[0]})")
        for name, command, target in rows:
            seconds = median_time(command, args.runs)
            if target is None:
                print(f"{name:<20} {seconds:>7.3f}s {'-':>8}  (every trial; no target)")
                continue
            ok = seconds < target
            failed += not ok
            print(f"{name:<20} {seconds:>7.3f}s {'< ' + f'{target:g}s':>8}  {'PASS' if ok else 'FAIL'}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
