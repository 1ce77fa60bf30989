"""Measure the vl-align example: the baseline and its backlog ideas over seeds, by hand.

    python scripts/tune_vl_align.py --ideas base 1 2 3 1+3 --seeds 0 1 2

Each variant applies the task's [[ideas]] edits (numbered from 1, in the task's order) to a fresh
copy of the example, then runs train.py and the frozen evaluate.py with ARA_SEED per seed, two
at a time; it prints the test metric, the last logged step and, for a run that failed, why.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "vl-align"
COPY = ("prepare.py", "train.py", "evaluate.py", "config.toml", "data")


def apply_ideas(folder: Path, numbers: list[int], ideas: list[dict]) -> None:
    """The ideas' search/replace edits, in order; each search must occur exactly once."""
    for n in numbers:
        for edit in ideas[n - 1].get("edits", []):
            path = folder / edit["path"]
            text = path.read_text()
            if text.count(edit["search"]) != 1:
                sys.exit(f"idea {n}: search text found {text.count(edit['search'])} times in {edit['path']}")
            path.write_text(text.replace(edit["search"], edit["replace"]))


def set_config(folder: Path, values: list[str]) -> None:
    """`key=value` lines of config.toml replaced (the key must be there)."""
    path = folder / "config.toml"
    text = path.read_text()
    for item in values:
        key, _, value = item.partition("=")
        text, n = re.subn(rf"^{re.escape(key)} = [^#\n]*", f"{key} = {value}  ", text, count=1, flags=re.M)
        if n != 1:
            sys.exit(f"--config {item}: no key {key!r} in config.toml")
    path.write_text(text)


def run(variant: str, seed: int, ideas: list[dict], steps: int | None, config: list[str]) -> dict:
    numbers = [] if variant == "base" else [int(x) for x in variant.split("+")]
    with tempfile.TemporaryDirectory(prefix="vl-align-") as tmp:
        folder = Path(tmp)
        for name in COPY:
            src = EXAMPLE / name
            (shutil.copytree if src.is_dir() else shutil.copy)(src, folder / name)
        apply_ideas(folder, numbers, ideas)
        set_config(folder, config)
        env = dict(os.environ, ARA_SEED=str(seed), OMP_NUM_THREADS="1")
        if steps:
            env["ARA_STEPS"] = str(steps)
        start = time.time()
        train = subprocess.run(
            [sys.executable, "train.py"], cwd=folder, env=env, capture_output=True, text=True
        )
        result = {"variant": variant, "seed": seed, "train_rc": train.returncode, "metric": None}
        lines = train.stdout.splitlines()
        vals = [line for line in lines if "val_recall" in line]
        result["last_val"] = vals[-1] if vals else ""
        result["fail"] = next((line for line in lines if line.startswith("FAIL")), "")
        if train.returncode == 0:
            ev = subprocess.run(
                [sys.executable, "evaluate.py"], cwd=folder, env=env, capture_output=True, text=True
            )
            found = re.search(r"^mean_recall: ([\d.]+)", ev.stdout, re.M)
            result["metric"] = float(found.group(1)) if found else None
        result["seconds"] = time.time() - start
        return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ideas", nargs="+", default=["base", "1", "2", "3", "1+3"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=None, help="ARA_STEPS (default: config.toml's)")
    parser.add_argument("--config", nargs="*", default=[], metavar="KEY=VALUE", help="config.toml values")
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    ideas = tomllib.loads((EXAMPLE / "task.toml").read_text()).get("ideas", [])
    jobs = [(v, s) for v in args.ideas for s in args.seeds]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = list(pool.map(lambda job: run(*job, ideas, args.steps, args.config), jobs))
    for r in results:
        shown = f"{r['metric']:.4f}" if r["metric"] is not None else "no metric"
        last = r["fail"] or r["last_val"]
        print(f"{r['variant']:>6} seed {r['seed']}: {shown}  {r['seconds']:.1f}s  {last}")
    print()
    for variant in args.ideas:
        values = [r["metric"] for r in results if r["variant"] == variant and r["metric"] is not None]
        failed = sum(1 for r in results if r["variant"] == variant and r["metric"] is None)
        spread = f" ± {statistics.pstdev(values):.3f}" if len(values) > 1 else ""
        mean = f"{statistics.fmean(values):.3f}{spread}" if values else "-"
        print(f"{variant:>6}: mean_recall {mean} over {len(values)} seeds; {failed} failed")


if __name__ == "__main__":
    main()
