"""The thread cap: seconds per trial when two trials share the machine, with and without it.

    python benchmarks/threads.py [--trials 6]

The bundled example pins torch to one thread itself; most training scripts do not. This runs the
example with that line removed (a typical script), two trials at once, `cpus_per_trial = 1`:
- capped: ara sets OMP_NUM_THREADS, MKL_NUM_THREADS, ... to 1 in each job (the default);
- uncapped: the task sets them to the machine's core count, as an uncapped job would get.
The same trials run in both; the runner's `elapsed` per trial is compared.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import commit_repo, submit  # noqa: E402

PIN = "    torch.set_num_threads(1)  # two trials share two cores\n"


def run(root: Path, name: str, trials: int, threads: int | None) -> list[float]:
    repo = root / name
    shutil.copytree(
        ROOT / "examples" / "mil-stain", repo, ignore=shutil.ignore_patterns(".ara", "predictions.json")
    )
    train = repo / "train.py"
    source = train.read_text()
    assert PIN in source, "the example no longer pins its threads where this benchmark expects"
    train.write_text(source.replace(PIN, ""))
    task = repo / "task.toml"
    text = task.read_text().replace("trials = 12 ", f"trials = {trials} ")
    if threads:
        names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
        env = ", ".join(f'{n} = "{threads}"' for n in names)
        text = text.replace(
            'eval = "python evaluate.py"\n', f'eval = "python evaluate.py"\nenv = {{ {env} }}\n'
        )
    task.write_text(text.replace("[run]\n", '[run]\nexecutor = "local"\n', 1))
    commit_repo(repo, name)
    return [t.elapsed for t in submit(task) if t.elapsed is not None]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        capped = run(Path(tmp), "capped", args.trials, None)
        uncapped = run(Path(tmp), "uncapped", args.trials, cores)
    for name, times in (("capped (1 thread)", capped), (f"uncapped ({cores} threads)", uncapped)):
        print(
            f"{name}: {len(times)} trials, two at once on {cores} cores: "
            f"mean {statistics.mean(times):.2f} s, median {statistics.median(times):.2f} s, "
            f"max {max(times):.2f} s per trial"
        )


if __name__ == "__main__":
    main()
