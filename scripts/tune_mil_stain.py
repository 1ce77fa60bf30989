"""Measure the mil-stain example: baseline seeds, single-knob flips, code edit, random sweep."""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "mil-stain"
FILES = ("prepare.py", "train.py", "evaluate.py")
DATA = "data"  # the stored val split and its answer key

# Backlog idea that needs a code change: exact search/replace on train.py.
CENTER_SEARCH = '''    """Per-bag feature transform applied to train and val alike."""
    return bag
'''
CENTER_REPLACE = '''    """Per-bag feature transform applied to train and val alike."""
    # Subtract the slide's mean embedding: removes the per-slide scanner/batch shift.
    return bag - bag.mean(axis=0, keepdims=True)
'''

# Single changes applied alone on the shipped config: backlog knobs, then plain values.
FLIPS: list[dict[str, Any]] = [
    {"class_weighting": "balanced"},
    {"gated_attention": True},
    {"instance_dropout": 0.2},
    {"label_smoothing": 0.1},
    {"hidden": 32},
    {"hidden": 64},
    {"lr": 0.003},
    {"lr": 0.005},
    {"lr": 0.02},
    {"dropout": 0.2},
    {"weight_decay": 0.01},
    {"bags_per_step": 16},
    {"bags_per_step": 32},
    {"attn_dim": 32},
]


@dataclass
class Trial:
    overrides: dict[str, Any]
    seed: int | None = None  # None: the config's own seed (ARA_SEED unset)
    center: bool = False
    result: dict[str, float] = field(default_factory=dict)


def sample_config(rng: random.Random) -> dict[str, Any]:
    """One draw from the proposed Optuna search space (uniform / log-uniform)."""

    def loguniform(lo: float, hi: float) -> float:
        return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    return {
        "lr": loguniform(1e-3, 2e-2),
        "weight_decay": loguniform(1e-5, 1e-1),
        "hidden": rng.choice([16, 32, 64, 128]),
        "attn_dim": rng.choice([8, 16, 32, 64]),
        "dropout": rng.uniform(0.0, 0.3),
        "bags_per_step": rng.choice([8, 16, 32]),
        "class_weighting": rng.choice(["none", "balanced"]),
        "label_smoothing": rng.uniform(0.0, 0.2),
        "instance_dropout": rng.uniform(0.0, 0.3),
        "gated_attention": rng.random() < 0.5,
    }


def to_toml(cfg: dict[str, Any]) -> str:
    def fmt(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, str):
            return json.dumps(v)
        return repr(v)

    return "".join(f"{k} = {fmt(v)}\n" for k, v in cfg.items())


def run_trial(trial: Trial, base: dict[str, Any], steps: int | None) -> Trial:
    """Run train.py + evaluate.py in a scratch copy of the example, as the orchestrator would."""
    with tempfile.TemporaryDirectory(prefix="mil-stain-") as tmp:
        work = Path(tmp)
        for name in FILES:
            shutil.copy(EXAMPLE / name, work / name)
        shutil.copytree(EXAMPLE / DATA, work / DATA)
        if trial.center:
            src = (work / "train.py").read_text()
            if CENTER_SEARCH not in src:
                raise SystemExit("centering edit: search text not found in train.py")
            (work / "train.py").write_text(src.replace(CENTER_SEARCH, CENTER_REPLACE))
        (work / "config.toml").write_text(to_toml({**base, **trial.overrides}))
        env = {**os.environ, "ARA_METRICS_PATH": str(work / "metrics.json")}
        env.pop("ARA_SEED", None)
        env.pop("ARA_STEPS", None)
        if trial.seed is not None:
            env["ARA_SEED"] = str(trial.seed)
        if steps is not None:
            env["ARA_STEPS"] = str(steps)
        t0 = time.time()
        for script in ("train.py", "evaluate.py"):
            proc = subprocess.run(
                [sys.executable, script], check=False, cwd=work, env=env, capture_output=True, text=True
            )
            if proc.returncode != 0:
                trial.result = {"macro_f1": float("nan"), "accuracy": float("nan")}
                trial.result["wall_s"] = time.time() - t0
                return trial
        trial.result = json.loads((work / "metrics.json").read_text())
        trial.result["wall_s"] = time.time() - t0
    return trial


def run_all(trials: list[Trial], base: dict[str, Any], args: argparse.Namespace) -> None:
    if args.center:
        for t in trials:
            t.center = True
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(lambda t: run_trial(t, base, args.steps), trials))


def summary(scores: list[float]) -> str:
    mean = statistics.fmean(scores)
    sd = statistics.pstdev(scores) if len(scores) > 1 else 0.0
    return f"{mean:.3f} ± {sd:.3f}  [{' '.join(f'{s:.3f}' for s in scores)}]"


def fmt_cfg(cfg: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in cfg.items())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", type=int, default=2, help="trials run in parallel")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3], help="ARA_SEED values")
    ap.add_argument("--n-random", type=int, default=50, help="random configs in the sweep")
    ap.add_argument("--top", type=int, default=3, help="sweep configs re-run over --seeds")
    ap.add_argument("--sample-seed", type=int, default=0, help="seed of the config sampler")
    ap.add_argument("--steps", type=int, default=None, help="ARA_STEPS for every trial")
    ap.add_argument("--center", action="store_true", help="apply the slide-centering edit to every trial")
    ap.add_argument(
        "--sections",
        nargs="+",
        default=["baseline", "flips", "sweep"],
        choices=["baseline", "flips", "sweep"],
    )
    args = ap.parse_args()

    with open(EXAMPLE / "config.toml", "rb") as f:
        base = tomllib.load(f)
    seeds: list[int] = args.seeds
    t_start = time.time()
    walls: list[float] = []

    base_scores: list[float] = []
    shipped_score = float("nan")
    if "baseline" in args.sections:
        shipped = Trial({})
        per_seed = [Trial({}, seed=s) for s in seeds]
        centered = [Trial({}, seed=s, center=True) for s in seeds]
        run_all([shipped, *per_seed, *centered], base, args)
        walls += [t.result["wall_s"] for t in [shipped, *per_seed, *centered]]
        base_scores = [t.result["macro_f1"] for t in per_seed]
        shipped_score = shipped.result["macro_f1"]
        print(
            f"baseline (shipped config, seed {base['seed']}): "
            f"macro_f1 {shipped.result['macro_f1']:.3f}  acc {shipped.result['accuracy']:.3f}"
        )
        print(f"baseline over ARA_SEED={seeds}: {summary(base_scores)}")
        print(f"baseline + slide-centering edit: {summary([t.result['macro_f1'] for t in centered])}")
        sys.stdout.flush()

    if "flips" in args.sections:
        groups = [[Trial(flip, seed=s) for s in seeds] for flip in FLIPS]
        run_all([t for g in groups for t in g], base, args)
        ref = statistics.fmean(base_scores) if base_scores else float("nan")
        print(f"\nsingle changes on the baseline, over ARA_SEED={seeds} (delta vs baseline mean):")
        for flip, g in zip(FLIPS, groups, strict=True):
            scores = [t.result["macro_f1"] for t in g]
            walls.extend(t.result["wall_s"] for t in g)
            delta = statistics.fmean(scores) - ref
            print(f"  {fmt_cfg(flip):28s} {summary(scores)}  ({delta:+.3f})")
        sys.stdout.flush()

    if "sweep" in args.sections:
        rng = random.Random(args.sample_seed)
        sweep = [Trial(sample_config(rng)) for _ in range(args.n_random)]
        run_all(sweep, base, args)
        walls += [t.result["wall_s"] for t in sweep]
        ranked = sorted(sweep, key=lambda t: -_nan_low(t.result["macro_f1"]))
        scores = [t.result["macro_f1"] for t in sweep]
        ok = [s for s in scores if not math.isnan(s)]
        print(
            f"\nrandom sweep: {len(sweep)} configs (seed {base['seed']}), "
            f"failed {len(scores) - len(ok)}, median {statistics.median(ok):.3f}"
        )
        if not math.isnan(shipped_score):
            # Chance that 10 draws from this space include one beating the shipped run.
            p_win = sum(s > shipped_score for s in ok) / len(scores)
            print(
                f"beat the shipped run ({shipped_score:.3f}): {p_win:.0%} of configs; "
                f"P(>=1 of 10 random draws beats it) = {1 - (1 - p_win) ** 10:.2f}"
            )
        for t in ranked[:5]:
            print(f"  {t.result['macro_f1']:.3f}  {fmt_cfg(t.overrides)}")
        top = ranked[: args.top]
        regroups = [[Trial(t.overrides, seed=s) for s in seeds] for t in top]
        centered = [Trial(top[0].overrides, seed=s, center=True) for s in seeds]
        run_all([r for g in regroups for r in g] + centered, base, args)
        print(f"top {len(top)} re-run over ARA_SEED={seeds}:")
        for t, g in zip(top, regroups, strict=True):
            print(f"  {summary([r.result['macro_f1'] for r in g])}  {fmt_cfg(t.overrides)}")
        print(f"best + slide-centering edit: {summary([t.result['macro_f1'] for t in centered])}")

    if walls:
        print(
            f"\ntrial wall time with {args.jobs} in parallel: median {statistics.median(walls):.1f}s, "
            f"max {max(walls):.1f}s; total {time.time() - t_start:.0f}s"
        )
    return 0


def _nan_low(x: float) -> float:
    return -1.0 if math.isnan(x) else x


if __name__ == "__main__":
    sys.exit(main())
