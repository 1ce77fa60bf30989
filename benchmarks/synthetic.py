"""A synthetic task of seeded trial durations, and a driver that runs one controller and samples it.

    python benchmarks/synthetic.py drive TASK --out FILE [--delay S]

The driver is the controller process: it runs the real controller on TASK (the offline planner,
behind a planner API that takes --delay seconds per call when given) and writes its own CPU
time, peak RSS, the planner thread's CPU time and a time series of RSS and CPU to FILE (JSON).
The utilization and overhead benchmarks build tasks with `sleepy_task` and start drivers.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slurm_autoresearch.ledger import Ledger  # noqa: E402
from slurm_autoresearch.trial import Trial  # noqa: E402

TRAIN = '''\
"""Synthetic training: holds its slot for `duration` seconds; the score does not depend on it."""
import time, tomllib
cfg = tomllib.load(open("config.toml", "rb"))
time.sleep(cfg["duration"])
open("pred.txt", "w").write(repr(0.5 + cfg.get("tweak", 0) * 1e-6))
'''

EVALUATE = '''\
"""Frozen evaluation: the prediction file's value is the score."""
print("---")
print(f"score: {float(open('pred.txt').read())}")
'''


def durations(n: int, low: float, high: float, seed: int) -> list[float]:
    rng = random.Random(seed)
    return [round(rng.uniform(low, high), 2) for _ in range(n)]


def sleepy_task(
    root: Path,
    times: list[float],
    *,
    executor: str,
    parallel: int,
    schedule: str = "continuous",
    extra: str = "",
) -> Path:
    """A git repo whose baseline runs times[0] seconds and whose backlog idea i runs times[i]. Every
    idea is a no-op for the score (under min_delta), so every schedule runs the same trials."""
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "evaluate.py").write_text(EVALUATE)
    (root / "config.toml").write_text(f"duration = {times[0]}\ntweak = 0\n")
    ideas = "".join(
        f'[[ideas]]\ntitle = "idea {i}"\nconfig = {{ duration = {d}, tweak = {i} }}\n'
        for i, d in enumerate(times[1:], 1)
    )
    gres = "\n[resources]\ngpus_per_trial = 1\n" if executor == "slurm" else ""
    (root / "task.toml").write_text(
        f"""\
[task]
name = "sleepy"
command = "python train.py"
eval = "python evaluate.py"

[metric]
name = "score"
goal = "max"
min_delta = 0.01

[budget]
steps = 100
trials = {len(times)}
trial_minutes = {max(times) / 60 + 2:.1f}
crash_limit = 1000

[run]
executor = "{executor}"
planner = "offline"
summarizer = "rules"
parallel = {parallel}
schedule = "{schedule}"

[surface]
allow = ["config.toml"]
freeze = ["evaluate.py", "train.py"]

[search]
config = "config.toml"

[tracking]
wandb = "off"

[noise]
repeats = 1  # sleeps, not measurements: one run each
{gres}{extra}
{ideas}"""
    )
    commit_repo(root, "sleepy task")
    return root / "task.toml"


def commit_repo(root: Path, message: str) -> None:
    """A benchmark's task directory as a git repository with one commit of everything in it."""
    for args in (
        ["init", "-q", "-b", "main"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", message],
    ):
        subprocess.run(["git", *args], cwd=root, check=True)


def submit(task: Path) -> list[Trial]:
    """`ara submit` of a task in its own process, then every trial of the run it made."""
    proc = subprocess.run(
        [sys.executable, "-m", "slurm_autoresearch.cli", "submit", str(task)],
        cwd=task.parent,
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"ara submit failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    (path,) = (task.parent / ".ara" / "runs").glob("*/ledger.sqlite")
    ledger = Ledger.open(path, readonly=True)
    try:
        return ledger.trials()
    finally:
        ledger.close()


def run_driver(
    task: Path, out: Path, delay: float = 0.0, env: dict[str, str] | None = None
) -> dict[str, Any]:
    """One controller in its own process (so its CPU and memory are its own); its report."""
    cmd = [sys.executable, str(Path(__file__)), "drive", str(task), "--out", str(out), "--delay", str(delay)]
    proc = subprocess.run(
        cmd, cwd=task.parent, capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    if proc.returncode != 0:
        raise SystemExit(f"driver failed ({proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


def trials_of(report: dict[str, Any]) -> tuple[list[Trial], dict[str, Any], list[dict[str, Any]]]:
    ledger = Ledger.open(Path(report["run_dir"]) / "ledger.sqlite", readonly=True)
    try:
        return ledger.trials(), ledger.meta(), ledger.events()
    finally:
        ledger.close()


# -- the driver (the controller process) -----------------------------------------------------------
class SlowPlanner:
    """A planner whose API takes `delay` seconds per call (the offline planner answers)."""

    def __init__(self, inner: Any, delay: float) -> None:
        self.inner, self.delay, self.name = inner, delay, inner.name

    def baseline(self, files: dict[str, str]) -> Any:
        return self.inner.baseline(files)

    def __getattr__(self, name: str) -> Any:  # refresh and whatever else the planner offers
        return getattr(self.inner, name)

    def propose(self, ctx: Any, n: int) -> Any:
        time.sleep(self.delay)
        return self.inner.propose(ctx, n)


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def drive(task_path: Path, out: Path, delay: float) -> None:
    from slurm_autoresearch.loop.launcher import launch, make_models
    from slurm_autoresearch.loop.preflight import load_task

    started = time.time()
    task = load_task(task_path)
    planner = make_models(task, None)[0]
    controller = launch(task, planner=SlowPlanner(planner, delay) if delay else planner, echo=lambda _: None)
    samples: list[list[float]] = []
    done = threading.Event()

    def sample() -> None:
        # Every half second: time, RSS, this process's CPU time, the planner thread's CPU time.
        while not done.wait(0.5):
            samples.append([time.time(), _rss_mb(), _cpu_s(), controller.planning.cpu_s])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    summary = controller.run()
    done.set()
    sampler.join()
    report = {
        "run_dir": str(controller.rundir.path),
        "state": summary.state,
        "started": started,
        "ended": time.time(),
        "cpu_s": _cpu_s(),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "planner_cpu_s": controller.planning.cpu_s,
        "samples": samples,
        "modules": sorted(
            m for m in ("torch", "wandb", "matplotlib", "optuna", "anthropic") if m in sys.modules
        ),
        "pid": os.getpid(),
    }
    out.write_text(json.dumps(report))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("drive")
    d.add_argument("task", type=Path)
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    drive(args.task, args.out, args.delay)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
