"""Decisions under noise: what each keep rule keeps when no change matters, and when one does.

    python benchmarks/decisions.py [--trials 50] [--runs 10] [--effect 2] [--sigma 0.01]
                                   [--noise normal|t3] [--rules default,plain,repeats5]

A synthetic task: the metric is 0.5 + effect * trick + noise of sd sigma drawn from the config
file's text, the seed and the steps, so any change reshuffles it like a real code change. The noise
is Gaussian, or with --noise t3 Student's t with 3 degrees of freedom scaled to the same sd (heavy
tails: about one run in 70 lies over 3 sd out, where Gaussian noise puts one in 370). Hypotheses are
backlog ideas that each set one no-op key; in the effect runs one of them (at a seeded random
position) sets `trick`, worth `effect` sigmas. Runs the real `ara submit` on the local executor with
the offline planner, then reads the ledger. Prints its figures: keeps, jobs, and job-seconds (the
GPU-seconds the same jobs would hold at one GPU each). Copied into an older checkout, it measures
that checkout's rules (README, "Decisions under noise", has both).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import commit_repo, submit  # noqa: E402
from slurm_autoresearch.trial import Decision, Trial, TrialKind  # noqa: E402

TRAIN = '''\
"""Synthetic training: a constant plus noise, plus a real effect when `trick` is on."""
import hashlib, os, random, tomllib
text = open("config.toml", "rb").read()
cfg = tomllib.loads(text.decode())
key = text + os.environ.get("ARA_SEED", "0").encode() + os.environ.get("ARA_STEPS", "0").encode()
rng = random.Random(hashlib.sha256(key).hexdigest())
noise = rng.gauss(0, 1)
if cfg["noise"] == "t3":  # Student's t, 3 dof, over its sd sqrt(3)
    noise /= (sum(rng.gauss(0, 1) ** 2 for _ in range(3)) / 3) ** 0.5 * 3 ** 0.5
value = 0.5 + cfg["effect"] * cfg["sigma"] * bool(cfg.get("trick")) + cfg["sigma"] * noise
open("pred.txt", "w").write(repr(value))
'''

EVALUATE = '''\
"""Frozen evaluation: the prediction file's value is the score."""
print("---")
print(f"score: {float(open('pred.txt').read())}")
'''


def synthetic_repo(
    root: Path,
    *,
    ideas: int,
    salt: int,
    sigma: float = 0.01,
    effect: float = 0.0,
    real_at: int | None = None,
    decide: str = "",
    parallel: int = 2,
    noise: str = "normal",
) -> Path:
    """A git repo with the synthetic task; returns its task.toml."""
    root.mkdir(parents=True)
    keys = "".join(f"k{i} = 0\n" for i in range(1, ideas + 1))
    config = f'salt = {salt}\nsigma = {sigma}\nnoise = "{noise}"\neffect = {effect}\ntrick = false\n{keys}'
    (root / "train.py").write_text(TRAIN)
    (root / "evaluate.py").write_text(EVALUATE)
    (root / "config.toml").write_text(config)
    backlog = []
    for i in range(1, ideas + 1):
        if i == real_at:
            backlog.append(f'[[ideas]]\ntitle = "idea {i}: turn the trick on"\nconfig = {{ trick = true }}\n')
        else:
            backlog.append(f'[[ideas]]\ntitle = "idea {i}: no-op k{i}"\nconfig = {{ k{i} = 1 }}\n')
    task = f"""\
[task]
name = "synthetic"
command = "python train.py"
eval = "python evaluate.py"

[metric]
name = "score"
goal = "max"

[budget]
steps = 100
trials = {ideas + 1}
crash_limit = 1000

[run]
executor = "local"
planner = "offline"
summarizer = "rules"
parallel = {parallel}
poll_seconds = 0.05

[surface]
allow = ["config.toml"]
freeze = ["evaluate.py", "train.py"]

[search]
config = "config.toml"

[tracking]
wandb = "off"

{decide}

{chr(10).join(backlog)}"""
    (root / "task.toml").write_text(task)
    commit_repo(root, "synthetic task")
    return root / "task.toml"


NOISE_RULE = "[noise]\nrepeats = 5\n"  # [decide] rule = "auto" -> the noise rule's race
DEFAULT_RULE = ""  # ara's defaults: [noise] repeats = 3 -> the race, level 0.02, up to 12 runs
PLAIN_RULE = '[noise]\nrepeats = 1\n[decide]\nrule = "min_delta"\n'  # min_delta = 0: any improvement
RULES = {"default": DEFAULT_RULE, "repeats5": NOISE_RULE, "plain": PLAIN_RULE}
NAMES = {
    "default": "the defaults (repeats 3; a race at 1, 2, 4, 8, 12 runs, level 0.02)",
    "repeats5": "noise-aware (repeats 5; the race)",
    "plain": "plain min_delta = 0, single runs",
}


def keeps(trials: list[Trial]) -> list[Trial]:
    return [t for t in trials if t.decision is Decision.KEEP and t.kind is not TrialKind.BASELINE]


def job_seconds(trials: list[Trial]) -> float:
    return sum(t.elapsed or 0.0 for t in trials if t.job_id)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=50, help="hypotheses incl. the baseline (noise runs)")
    parser.add_argument("--runs", type=int, default=10, help="seeded runs with a real effect")
    parser.add_argument("--effect-ideas", type=int, default=15, help="hypotheses in each effect run")
    parser.add_argument("--effect", type=float, default=2.0, help="the real effect, in sigmas")
    parser.add_argument("--sigma", type=float, default=0.01)
    parser.add_argument("--noise", choices=("normal", "t3"), default="normal")
    parser.add_argument(
        "--rules",
        default="default,plain",
        help=f"comma-separated, of {', '.join(RULES)}; the effect runs use the first",
    )
    args = parser.parse_args()
    rules = args.rules.split(",")
    tmp = Path(tempfile.mkdtemp(prefix="ara-decisions-"))
    print(f"synthetic task, {args.noise} noise of sd {args.sigma}; runs under {tmp}")

    for name in rules:
        start = time.time()
        trials = submit(
            synthetic_repo(
                tmp / f"noise-{name}",
                ideas=args.trials - 1,
                salt=1,
                sigma=args.sigma,
                decide=RULES[name],
                noise=args.noise,
            )
        )
        kept = keeps(trials)
        jobs = sum(1 for t in trials if t.job_id)
        base = sum(1 for t in trials if t.kind is TrialKind.REPEAT and t.of == "T0001")
        confirmations = sum(1 for t in trials if t.kind is TrialKind.REPEAT and t.of != "T0001")
        print(
            f"pure noise, {args.trials} trials, {NAMES[name]}: kept {len(kept)} "
            f"({', '.join(t.id for t in kept) or 'none'}); {jobs} jobs ({base} more baseline runs, "
            f"{confirmations} other repeats), {job_seconds(trials):.1f} job-seconds, "
            f"{time.time() - start:.0f} s"
        )

    found = jobs_total = 0
    seconds = 0.0
    rng = random.Random(2026)
    print(f"effect runs with {NAMES[rules[0]]}:")
    for i in range(args.runs):
        real_at = rng.randint(1, args.effect_ideas)
        start = time.time()
        trials = submit(
            synthetic_repo(
                tmp / f"effect-{i}",
                ideas=args.effect_ideas,
                salt=100 + i,
                sigma=args.sigma,
                effect=args.effect,
                real_at=real_at,
                decide=RULES[rules[0]],
                noise=args.noise,
            )
        )
        jobs = sum(1 for t in trials if t.job_id)
        jobs_total += jobs
        seconds += job_seconds(trials)
        kept = keeps(trials)
        real = [t for t in kept if "trick" in t.title]
        found += bool(real)
        others = [t.id for t in kept if "trick" not in t.title]
        runs = len((real[0].evidence or {}).get("candidate") or []) if real else 0
        print(
            f"effect run {i + 1}: real idea at position {real_at} "
            f"{f'kept as {real[0].id} on {runs} runs' if real else 'NOT kept'}; other keeps: "
            f"{others or 'none'}; {jobs} jobs, {time.time() - start:.0f} s"
        )
    print(
        f"real effect of {args.effect:g} sd kept in {found} of {args.runs} seeded runs "
        f"({jobs_total} jobs, {seconds:.1f} job-seconds in all)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
