"""Controller overhead: CPU time and memory per trial over a long run, and whether memory stays flat.

    python benchmarks/overhead.py [--trials 200] [--slots 4] [--duration 0.5] [--executor local]
        [--claude]

A real controller process (benchmarks/synthetic.py drive) runs --trials synthetic trials of
--duration seconds; a sampler thread inside it records RSS and CPU time every half second. Prints
RSS when 50, 100, 150 and all trials are decided, the peak, CPU-seconds per 100 trials and per
trial from trial 50 on (the planner thread's own CPU time excluded: the offline planner is the
planner call), CPU-seconds per minute of run, and which heavy modules the process had loaded.
With --claude the planner is Claude through the real `anthropic` SDK, against the fake Messages
API served from this process (benchmarks/tokens.py's task: near-instant trials whose config the
fake's proposals edit); the controller process then carries the SDK.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import tokens
from benchmarks.synthetic import run_driver, sleepy_task, trials_of


def at_decided(samples: list[list[float]], decided: list[float], n: int) -> list[float] | None:
    """The first sample taken once n trials were decided."""
    if len(decided) < n:
        return None
    moment = decided[n - 1]
    return next((s for s in samples if s[0] >= moment), samples[-1] if samples else None)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200)
    parser.add_argument("--slots", type=int, default=4)
    parser.add_argument("--duration", type=float, default=0.5)
    parser.add_argument("--executor", choices=["local", "slurm"], default="local")
    parser.add_argument("--claude", action="store_true", help="the Claude planner, against the fake API")
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="ara-overhead-"))
    env = {}
    if args.claude:
        fake = tokens.fake_module()
        tokens.remember_titles(fake)
        server = fake.FakeClaude().start()
        env = {"ANTHROPIC_BASE_URL": server.url, "ANTHROPIC_API_KEY": "sk-ant-bench-not-a-real-key-000"}
        task = tokens.synthetic_repo(tmp / "run", args.trials, args.slots)
    else:
        task = sleepy_task(
            tmp / "run", [args.duration] * args.trials, executor=args.executor, parallel=args.slots
        )
    report = run_driver(task, tmp / "report.json", env=env)
    trials, _, _ = trials_of(report)
    decided = sorted(t.decided_at for t in trials if t.decided_at)
    samples = report["samples"]
    print(
        f"{'claude' if args.claude else 'offline'} planner, {args.executor} executor, {args.slots} slots, "
        f"{len(trials)} trials" + ("" if args.claude else f" of {args.duration:g} s") + "; "
        f"{report['ended'] - report['started']:.0f} s; runs under {tmp}"
    )
    marks = sorted({n for n in (50, 100, 150, 200, 300, 400, args.trials) if n <= len(decided)})
    for n in marks:
        s = at_decided(samples, decided, n)
        if s:
            print(f"  {n:4d} decided: RSS {s[1]:6.1f} MB, CPU {s[2]:6.2f} s (planner {s[3]:.2f} s)")
    print(
        f"  peak RSS {report['peak_rss_mb']:.1f} MB; modules loaded: {', '.join(report['modules']) or 'none'}"
    )
    first, last = at_decided(samples, decided, 50), at_decided(samples, decided, marks[-1])
    if first and last and marks[-1] > 50:
        n = marks[-1] - 50
        own = (last[2] - first[2]) - (last[3] - first[3])
        rss = [s[1] for s in samples if first[0] <= s[0] <= last[0]]
        print(
            f"  trials 50-{marks[-1]}: {own / n * 1000:.1f} ms CPU per trial without the planner "
            f"({own / n * 100:.2f} CPU-s per 100 trials), planner {(last[3] - first[3]) / n * 1000:.1f} ms; "
            f"RSS {min(rss):.1f}-{max(rss):.1f} MB"
        )
    total = report["cpu_s"]
    minutes = (report["ended"] - report["started"]) / 60
    per_trial, per_min = total / len(trials) * 1000, total / minutes
    print(f"  whole run: {total:.1f} CPU-s ({per_trial:.0f} ms per trial, {per_min:.1f} CPU-s per minute)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
