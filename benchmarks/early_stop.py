"""Early stopping: slot-seconds saved, and whether the same ideas are kept, on synthetic curves.

    python benchmarks/early_stop.py [--ideas 16] [--steps 60] [--seed 3] [--parallel 4]

Each trial prints `step N ... val_score V` every 2 steps (0.1 s a report) on a curve that climbs
to its final score, plus seeded noise; the baseline runs 3 seeds, so the margin is 3 standard
deviations of the incumbent's runs at each step. Ideas move the final score by a seeded random
amount (most of them down). The same ideas run with and without `[early_stop]`; the script
prints slot-seconds, trials stopped early and the kept set of each.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import commit_repo, submit  # noqa: E402
from slurm_autoresearch.trial import Decision  # noqa: E402

TRAIN = '''\
"""A curve towards `final`: val_score = final - 0.3 * (1 - step / steps) + noise (seeded)."""
import os, random, time, tomllib
cfg = tomllib.load(open("config.toml", "rb"))
steps = int(os.environ.get("ARA_STEPS", "60"))
rng = random.Random(int(os.environ.get("ARA_SEED", "0")) * 1000 + int(cfg["salt"]))
final = 0.7 + cfg["effect"] + rng.gauss(0, 0.004)
for step in range(0, steps + 1, 2):
    print(f"step {step}/{steps} val_score {final - 0.3 * (1 - step / steps) + rng.gauss(0, 0.004):.4f}")
    time.sleep(0.1)
open("pred.txt", "w").write(repr(final))
'''

EVALUATE = 'print("---")\nprint(f"score: {float(open(\'pred.txt\').read())}")\n'


def repo(root: Path, effects: list[float], steps: int, parallel: int, early: bool) -> Path:
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "evaluate.py").write_text(EVALUATE)
    (root / "config.toml").write_text("salt = 0\neffect = 0.0\n")
    ideas = "".join(
        f'[[ideas]]\ntitle = "idea {i} ({e:+.3f})"\nconfig = {{ salt = {i}, effect = {e} }}\n'
        for i, e in enumerate(effects, 1)
    )
    stop = '[early_stop]\nmetric = "val_score"\ngoal = "max"\n' if early else ""
    (root / "task.toml").write_text(
        f"""\
[task]
name = "curves"
command = "python train.py"
eval = "python evaluate.py"

[metric]
name = "score"
goal = "max"

[budget]
steps = {steps}
trials = {len(effects) + 1}
crash_limit = 1000

[run]
executor = "local"
planner = "offline"
summarizer = "rules"
parallel = {parallel}
poll_seconds = 0.5

[noise]
repeats = 3


[surface]
allow = ["config.toml"]
freeze = ["evaluate.py", "train.py"]

[search]
config = "config.toml"

[tracking]
wandb = "off"

{stop}
{ideas}"""
    )
    commit_repo(root, "curves")
    return root / "task.toml"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ideas", type=int, default=16)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    # Most ideas hurt (as most do), a few help: effects in score units, noise sd 0.004.
    effects = [round(rng.choice([-0.15, -0.08, -0.04, -0.02, 0.0, 0.02, 0.05]), 3) for _ in range(args.ideas)]
    tmp = Path(tempfile.mkdtemp(prefix="ara-early-stop-"))
    print(f"{args.ideas} ideas, effects {effects}; runs under {tmp}")
    results = {}
    for early in (False, True):
        trials = submit(
            repo(tmp / ("early" if early else "plain"), effects, args.steps, args.parallel, early)
        )
        busy = sum(t.elapsed or 0 for t in trials)
        stopped = [t for t in trials if t.job_state == "stopped"]
        kept = sorted(t.title for t in trials if t.decision is Decision.KEEP and t.title != "baseline")
        results[early] = (busy, kept)
        print(
            f"{'with' if early else 'without'} [early_stop]: {len(trials)} jobs, {busy:.0f} slot-s, "
            f"{len(stopped)} stopped early; kept: {', '.join(kept) or 'none'}"
        )
    (plain, kept_plain), (early, kept_early) = results[False], results[True]
    print(
        f"slot-seconds saved: {plain - early:.0f} of {plain:.0f} ({(plain - early) / plain:.0%}); "
        f"same ideas kept: {kept_plain == kept_early}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
