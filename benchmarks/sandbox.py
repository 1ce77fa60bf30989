"""The sandbox's cost: seconds added to each trial by bubblewrap (training room and evaluation room).

    python benchmarks/sandbox.py [--trials 10] [--example-trials 6]

Two tasks run twice each through `ara submit` (local executor, one trial at a time, the same
trials in the same order), once with `[sandbox] mode = "none"` and once with "bwrap":
- a trivial task (a command and an evaluation that only start Python), where the sandbox's
  fixed cost is all there is to see;
- the bundled example (torch, 400 steps), the cost in proportion to a real trial.
The runner's own `elapsed` (command start to evaluation end) is compared per trial.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import commit_repo, submit  # noqa: E402
from slurm_autoresearch.executors.sandbox import probe  # noqa: E402

TRIVIAL = """\
[task]
name = "trivial"
command = "python train.py"
eval = "python evaluate.py"

[metric]
name = "score"
goal = "max"

[budget]
steps = 1
trials = {trials}

[run]
executor = "local"
planner = "offline"
summarizer = "rules"
poll_seconds = 0.05

[surface]
allow = ["config.toml"]
freeze = ["evaluate.py"]

[search]
config = "config.toml"
startup_trials = 100

[search.space]
x = {{ low = 0.0, high = 1.0 }}

[noise]
repeats = 1  # the same jobs with and without the sandbox

[sandbox]
mode = "{mode}"
"""


def _elapsed(task: Path) -> list[float]:
    trials = submit(task)
    return [t.elapsed for t in trials if t.elapsed is not None]


def trivial(root: Path, mode: str, trials: int) -> list[float]:
    repo = root / f"trivial-{mode}"
    repo.mkdir()
    (repo / "train.py").write_text("open('out.txt', 'w').write(open('config.toml').read())\n")
    (repo / "evaluate.py").write_text(
        "print('---')\nprint('score:', open('config.toml').read().split('=')[1])\n"
    )
    (repo / "config.toml").write_text("x = 0.5\n")
    (repo / "task.toml").write_text(TRIVIAL.format(trials=trials, mode=mode))
    commit_repo(repo, "trivial")
    return _elapsed(repo / "task.toml")


def example(root: Path, mode: str, trials: int) -> list[float]:
    repo = root / f"example-{mode}"
    shutil.copytree(
        ROOT / "examples" / "mil-stain", repo, ignore=shutil.ignore_patterns(".ara", "predictions.json")
    )
    task = repo / "task.toml"
    text = (
        task.read_text()
        .replace("trials = 12 ", f"trials = {trials} ")
        .replace("parallel = 2 ", "parallel = 1 ")
    )
    task.write_text(text + f'\n[sandbox]\nmode = "{mode}"\n')
    commit_repo(repo, "example")
    return _elapsed(task)


def line(name: str, none: list[float], bwrap: list[float]) -> str:
    a, b = statistics.mean(none), statistics.mean(bwrap)
    return (
        f"{name}: {len(none)} trials each; mean per trial {a:.3f} s without, {b:.3f} s in bwrap: "
        f"{b - a:+.3f} s ({(b - a) / a * 100:+.1f}%); median {statistics.median(none):.3f} -> "
        f"{statistics.median(bwrap):.3f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--example-trials", type=int, default=6)
    args = parser.parse_args()
    why = probe()
    if why:
        raise SystemExit(f"no sandbox to measure: {why}")
    # ignore_cleanup_errors: the W&B summary process may still be writing into a run at its end.
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        root = Path(tmp)
        print(line("trivial task", trivial(root, "none", args.trials), trivial(root, "bwrap", args.trials)))
        if args.example_trials:
            none = example(root, "none", args.example_trials)
            bwrap = example(root, "bwrap", args.example_trials)
            print(line("bundled example", none, bwrap))


if __name__ == "__main__":
    main()
