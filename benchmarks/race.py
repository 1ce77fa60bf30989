"""The keep rule's error rates by Monte Carlo: ara's own `decide.judge` on simulated runs, no jobs.

    python benchmarks/race.py [--reps 400] [--effect 2] [--noise normal|t3] [--set decide.confirm=4 ...]

Each episode is a run as the decisions benchmark has it, one hypothesis at a time: a baseline of
`[noise] repeats` seeds, then hypotheses judged by `judge` against the incumbent, with the runs it
asks for (the candidate's and the incumbent's) drawn at once. Pure-noise episodes have 49 no-op
hypotheses; effect episodes 15, one of them (at a random position) better by `effect` sd. Prints
false keeps per 49 hypotheses, the share of effect episodes that keep the real change, and runs
per episode: the figures behind DESIGN.md's choice of looks, level split and futility bound, with
far more episodes than the end-to-end benchmark can afford.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slurm_autoresearch.decide import judge  # noqa: E402
from slurm_autoresearch.hypothesis import Hypothesis  # noqa: E402
from slurm_autoresearch.spec import TaskSpec  # noqa: E402
from slurm_autoresearch.trial import Decision, Trial, TrialState  # noqa: E402

TASK = """
[task]
name = "race"
command = "true"
[metric]
name = "score"
goal = "max"
[budget]
steps = 100
[surface]
allow = ["train.py"]
"""


def draw(rng: random.Random, noise: str) -> float:
    """Unit-sd noise: Gaussian, or Student's t with 3 dof over its sd sqrt(3)."""
    z = rng.gauss(0, 1)
    if noise == "t3":
        z /= math.sqrt(sum(rng.gauss(0, 1) ** 2 for _ in range(3)) / 3) * math.sqrt(3)
    return z


class Episode:
    def __init__(self, spec: TaskSpec, rng: random.Random, noise: str) -> None:
        self.spec, self.rng, self.noise = spec, rng, noise
        self.trials: list[Trial] = []
        self.runs = 0

    def run(self, commit: str, mean: float, n: int, decision: Decision | None = Decision.REPEAT) -> Trial:
        first = None
        for _ in range(n):
            seq = len(self.trials) + 1
            t = Trial(
                f"T{seq:05d}", seq, commit, "idea", Hypothesis(commit), commit=commit, steps=100,
                metric=mean + draw(self.rng, self.noise), state=TrialState.DONE, decision=decision,
            )  # fmt: skip
            self.trials.append(t)
            self.runs += 1
            first = first or t
        assert first is not None
        return first

    def hypothesis(self, commit: str, mean: float, incumbent: Trial, incumbent_mean: float) -> bool:
        """Whether the candidate is kept, after every run its race asks for."""
        cand = self.run(commit, mean, 1, decision=None)
        while True:
            verdict = judge(cand, self.trials, incumbent, self.spec)
            if verdict.decision is not None:
                return verdict.decision is Decision.KEEP
            self.run(commit, mean, verdict.confirm)
            if verdict.race:
                self.run(incumbent.commit or "", incumbent_mean, verdict.race)


def episode(
    spec: TaskSpec, seed: int, noise: str, ideas: int, real_at: int | None, effect: float
) -> tuple[bool, int, int]:
    """(real change kept, no-ops kept, runs)."""
    ep = Episode(spec, random.Random(seed), noise)
    incumbent = ep.run("h0", 0.0, spec.noise.repeats)
    level, found, false = 0.0, False, 0
    for h in range(1, ideas + 1):
        real = h == real_at
        mean = level + effect if real else level
        if ep.hypothesis(f"h{h}", mean, incumbent, level):
            found, false = found or real, false + (not real)
            incumbent, level = ep.trials[[t.commit for t in ep.trials].index(f"h{h}")], mean
    return found, false, ep.runs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=400)
    parser.add_argument("--effect", type=float, default=2.0, help="the real change, in noise sd")
    parser.add_argument("--noise", choices=("normal", "t3"), default="normal")
    parser.add_argument("--set", action="append", default=[], help="section.key=value (TOML value)")
    args = parser.parse_args()
    data = tomllib.loads(TASK)
    for item in args.set:
        key, value = item.split("=", 1)
        section, name = key.split(".")
        data.setdefault(section, {})[name] = tomllib.loads(f"v = {value}")["v"]
    spec = TaskSpec.model_validate(data)
    false = runs_null = 0
    for rep in range(args.reps):
        _, f, r = episode(spec, rep, args.noise, 49, None, 0.0)
        false, runs_null = false + f, runs_null + r
    found = runs_effect = 0
    positions = random.Random(7)
    for rep in range(args.reps):
        hit, _, r = episode(spec, 10_000 + rep, args.noise, 15, positions.randint(1, 15), args.effect)
        found, runs_effect = found + hit, runs_effect + r
    shown = " ".join(args.set) or "the defaults"
    print(
        f"{shown}, {args.noise} noise, {args.reps} episodes each: {false / args.reps:.3f} false keeps per "
        f"49 no-ops ({runs_null / args.reps:.0f} runs); a {args.effect:g}-sd change kept in "
        f"{found / args.reps:.0%} ({runs_effect / args.reps:.0f} runs per 15 hypotheses)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
