"""Screening at the default steps: GPU-hours until a search first reaches a full-budget search's best.

    python benchmarks/screening.py [--example patch-artifacts] [--trials 12] [--screened-trials N]
                                   [--screen auto] [--halving] [--round-size 4] [--promote 1]
                                   [--min-saving 0.1]
                                   [--executor local|slurm] [--parallel 2] [--keep]
                                   [--full-from KEPT_COPY] [--screened-from KEPT_COPY]

Runs the example twice from fresh copies, at its own default steps, with the same trial budget
and the offline planner: every hypothesis at the full budget, then screened (`[fidelity]
screen_steps = auto` by default: the cost model decides whether to screen). The target is the
full-budget search's best (its incumbent's metric). For each run it prints the GPU-hours (sacct's,
on Slurm) or slot-hours (job wall time, locally) spent until the run first kept a trial at least
that good (within the task's min_delta, and strictly), counting every job's share up to that
moment, and the ratio; a run that never reaches it says so and gives its best keep instead; then
the same for the best both runs reached. Also printed: the cost model the screened run fitted
(start-up and per-step cost) and what it decided. `--screened-trials` gives the screened run more
hypotheses (the same GPU-hours for more ideas, rather than the same ideas for fewer).
The transfer check (`[validate]`) is off in both runs: it comes after the search. `--keep` keeps
the example copies; `--full-from` and `--screened-from` read kept runs instead of running them.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks import fidelity  # noqa: E402
from benchmarks.fidelity import fresh_copy  # noqa: E402
from slurm_autoresearch import cost  # noqa: E402
from slurm_autoresearch.ledger import Ledger  # noqa: E402
from slurm_autoresearch.trial import Decision, Trial  # noqa: E402


@dataclass(frozen=True)
class Run:
    trials: list[Trial]
    meta: dict
    wall_s: float


@dataclass(frozen=True)
class Reached:
    hours: float  # GPU- or slot-hours spent up to the moment
    trial: Trial | None  # the keep that reached the target; None: never reached
    best: Trial | None  # the run's best keep (what it reached instead)


def submit(task: Path, settings: list[str]) -> Run:
    return read(task.parent, fidelity.submit(task, settings))


def read(workdir: Path, wall_s: float = 0.0) -> Run:
    """The one run under the example copy's `.ara/runs`."""
    (path,) = (workdir / ".ara" / "runs").glob("*/ledger.sqlite")
    ledger = Ledger.open(path, readonly=True)
    try:
        meta = ledger.meta()
        wall = wall_s or float(meta.get("ended_at") or 0.0) - float(meta.get("created_at") or 0.0)
        return Run(ledger.trials(), meta, wall)
    finally:
        ledger.close()


Price = Callable[[Trial], float]  # the seconds a finished job cost


def measured(gpu: bool) -> Price:
    """What the job was charged: its GPU-seconds, or its wall time on an executor without GPUs."""
    return lambda t: (t.gpu_seconds or 0.0) if gpu else (t.elapsed or 0.0)


def modelled(model: cost.Model, default_steps: int) -> Price:
    """What the cost model says a job of its steps costs: the same price for both runs, whatever
    else shared the node while each ran."""
    return lambda t: model.seconds(t.steps if t.steps is not None else default_steps)


def spent_until(trials: list[Trial], moment: float, price: Price) -> float:
    """Hours of every job up to `moment`: whole for jobs that ended before, a share for those running."""
    total = 0.0
    for t in trials:
        began, ended = t.job_started_at, t.job_ended_at
        if began is None or ended is None or began >= moment:
            continue
        spent = price(t)
        share = 1.0 if ended <= moment or ended <= began else (moment - began) / (ended - began)
        total += spent * share
    return total / 3600


def reached(run: Run, target: float, goal: str, tolerance: float, price: Price) -> Reached:
    """When the run first kept a trial at least `target - tolerance` good (for goal max)."""
    keeps = sorted(
        (t for t in run.trials if t.decision is Decision.KEEP and t.metric is not None),
        key=lambda t: (t.decided_at or 0.0, t.seq),
    )
    sign = 1.0 if goal == "max" else -1.0
    best = max(keeps, key=lambda t: sign * (t.metric or 0.0), default=None)
    for t in keeps:
        assert t.metric is not None
        if sign * (t.metric - target) >= -tolerance:
            return Reached(spent_until(run.trials, t.decided_at or 0.0, price), t, best)
    end = max((t.job_ended_at or 0.0 for t in run.trials), default=0.0)
    return Reached(spent_until(run.trials, end, price), None, best)


def _said(got: Reached, unit: str) -> str:
    if got.trial is not None and got.trial.metric is not None:
        return f"{got.hours:.4f} {unit}, by keep {got.trial.id} ({got.trial.metric:.4f}, {got.trial.title})"
    best = got.best
    instead = f"{best.metric:.4f} by {best.id}" if best is not None and best.metric is not None else "none"
    return f"never: {got.hours:.4f} {unit} in all; its best keep {instead}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--example", default="patch-artifacts")
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument(
        "--screened-trials", type=int, help="the screened run's trial budget (default: --trials)"
    )
    parser.add_argument("--screen", default="auto", help='screen steps, or "auto" (the cost model decides)')
    parser.add_argument("--halving", action="store_true")
    parser.add_argument("--round-size", type=int, default=4)
    parser.add_argument("--promote", type=int, default=1)
    parser.add_argument("--min-saving", type=float, default=0.1)
    parser.add_argument("--executor", choices=["slurm", "local"], default="local")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--full-from", type=Path, help="an earlier full run's kept copy")
    parser.add_argument("--screened-from", type=Path, help="an earlier screened run's kept copy")
    parser.add_argument("--keep", action="store_true", help="keep the example copies; print where")
    args = parser.parse_args()
    example = ROOT / "examples" / args.example
    tmp = Path(tempfile.mkdtemp(prefix="ara-screening-"))
    common = [
        f"run.executor={args.executor}",
        "run.planner=offline",
        f"run.parallel={args.parallel}",
        f"budget.trials={args.trials}",
        "validate.top=0",
    ]
    if args.executor == "slurm":
        common += ["resources.gpus_per_trial=1", "slurm.poll_seconds=1.0"]
    screen = args.screen if args.screen == "auto" else int(args.screen)
    screened_settings = [
        *common,
        f"budget.trials={args.screened_trials or args.trials}",
        f'fidelity.screen_steps="{screen}"' if screen == "auto" else f"fidelity.screen_steps={screen}",
        f"fidelity.halving={'true' if args.halving else 'false'}",
        f"fidelity.round_size={args.round_size}",
        f"fidelity.promote={args.promote}",
        f"fidelity.min_saving={args.min_saving}",
    ]
    full = read(args.full_from) if args.full_from else submit(fresh_copy(tmp / "full", example), common)
    if args.screened_from:
        screened = read(args.screened_from)
    else:
        screened = submit(fresh_copy(tmp / "screened", example), screened_settings)
    gpu = args.executor == "slurm"
    unit = "GPU-hours" if gpu else "slot-hours"
    rule = full.meta.get("rule") or {}
    goal, tolerance = rule.get("goal", "max"), float(rule.get("min_delta") or 0.0)
    incumbent = max(  # the latest keep, as the ledger has it
        (t for t in full.trials if t.decision is Decision.KEEP and t.metric is not None),
        key=lambda t: (t.decided_at or 0.0, t.seq),
    )
    assert incumbent.metric is not None
    target = incumbent.metric
    print(
        f"{args.example}: {args.trials} hypotheses at the full budget, {args.screened_trials or args.trials} "
        f"screened; {rule.get('full_steps')} steps (the default), {args.executor} x{args.parallel}"
    )
    print(f"target: the full-budget search's best, {target:.4f} by {incumbent.id} ({incumbent.title})")
    plan = screened.meta.get("fidelity_plan") or {}
    if plan.get("why"):
        print(f"screened run's cost model: {plan['why']}")
    points, kind = cost.observed(full.trials + screened.trials, rule.get("steps") or 0)
    both = cost.fit(points, kind)
    if both is not None:
        print(f"fitted on both runs' jobs: {both.describe()}")
    runs = {"full budget": full, "screened": screened}
    for name, run in runs.items():
        total = spent_until(run.trials, float("inf"), measured(gpu))
        jobs = sum(1 for t in run.trials if t.job_id)
        short = sum(1 for t in run.trials if t.job_id and t.fidelity == "screen")
        print(f"{name}: {jobs} jobs ({short} short), {total:.4f} {unit} in all, {run.wall_s:.0f} s wall")
    # the full-budget search's best, then the best both reached (the lower of their two bests)
    bests = [reached(run, target, goal, 0.0, measured(gpu)).best for run in runs.values()]
    sign = 1.0 if goal == "max" else -1.0
    both_reached = (
        min((sign * (b.metric or 0.0) for b in bests if b is not None), default=sign * target) * sign
    )
    levels = [(target, tolerance, "the full-budget best"), (target, 0.0, "the full-budget best")]
    if sign * both_reached < sign * target:
        levels.append((both_reached, 0.0, "the best both reached"))
    for level, tol, what in levels:
        got = {name: reached(run, level, goal, tol, measured(gpu)) for name, run in runs.items()}
        a, b = got["full budget"], got["screened"]
        ratio = f"{b.hours / a.hours:.2f}" if a.trial and b.trial and a.hours > 0 else "n/a (not reached)"
        within = f" within {tol:g}" if tol else ""
        if both is not None and a.trial and b.trial:
            price = modelled(both, rule.get("steps") or 0)
            a_m, b_m = (reached(run, level, goal, tol, price).hours for run in runs.values())
            ratio += f" ({b_m / a_m:.2f} with every job priced by the common cost model)" if a_m > 0 else ""
        print(f"to reach {what} {level:.4f}{within}: ratio screened / full budget {ratio}")
        for name, one in got.items():
            print(f"  {name}: {_said(one, unit)}")
    if args.keep:
        print(f"kept: {tmp} (reuse the full run with --full-from {tmp / 'full' / args.example})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
