"""Planner input tokens per call over a real run with the Claude planner against the fake Messages API.

    python benchmarks/tokens.py [--trials 200] [--parallel 4] [--keep DIR] [--plain-fake] [--curves]

A synthetic task in a temp git repo: config.toml holds KEYS numeric keys and a near-instant
train.py prints `score` as the sum of their logarithms, so the fake planner's proposals (scale one
number of the shown files) apply, some improve and are kept, and titles stay fresh as the
incumbent moves. The real controller runs it (local executor, rules summarizer) with the real
`anthropic` SDK pointed at scripts/fake_claude.py, which counts four characters a token and
reports prompt-cache reads and writes. The fake here remembers every title it proposed
(--plain-fake: only those in the prompt, so it soon repeats old ideas). Then the ledger's planner
calls are read back. Prints the tokens at calls 1, 10, 50, 100 and the last, mean and max, the
cached share after the first call, and last/10th (about 1 when the prompt stays flat).
--curves: train.py also prints 21 progress lines of training and validation loss (validation
turning up at a step that depends on the score), so every trial has a curve digest and the
prompt carries its curve lines.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.synthetic import commit_repo  # noqa: E402
from slurm_autoresearch.ledger import Ledger  # noqa: E402
from slurm_autoresearch.loop.launcher import launch  # noqa: E402
from slurm_autoresearch.loop.preflight import load_task  # noqa: E402
from slurm_autoresearch.trial import Decision, Trial  # noqa: E402

KEYS = 40  # enough knobs for fresh ideas through 200 trials

TRAIN = '''\
"""Synthetic training: the score is the sum of the config's logarithms, printed at once."""
import math, tomllib
cfg = tomllib.load(open("config.toml", "rb"))
print("---")
print(f"score: {sum(math.log(v) for v in cfg.values() if isinstance(v, float) and v > 0):.6f}")
'''

TRAIN_CURVES = '''\
"""Synthetic training with curves: 21 progress lines, validation turning up where the score says."""
import math, tomllib
cfg = tomllib.load(open("config.toml", "rb"))
score = sum(math.log(v) for v in cfg.values() if isinstance(v, float) and v > 0)
turn = 200 + 600 / (1 + math.exp(-score))
for step in range(0, 1001, 50):
    val = 0.5 + 0.5 * math.exp(-step / 150) + 0.0004 * max(0.0, step - turn)
    print(f"step {step}/1000 loss {0.2 + math.exp(-step / 300):.4f} val_loss {val:.4f}")
print("---")
print(f"score: {score:.6f}")
'''

CURVES = """
[curves]
val = "val_loss"
val_goal = "min"
"""

TASK = """\
[task]
name = "tokens"
description = "Maximize the sum of logarithms of the config's values."
command = "python train.py"

[metric]
name = "score"
goal = "max"

[budget]
steps = 10
trials = {trials}
crash_limit = 1000

[run]
executor = "local"
planner = "anthropic"
summarizer = "rules"
parallel = {parallel}
poll_seconds = 0.2

[models]
max_retries = 2
timeout_s = 30

[surface]
allow = ["config.toml"]
freeze = ["train.py"]

[search]
config = "config.toml"
"""

CALLS_SHOWN = (1, 10, 50, 100)  # plus the last call


def fake_module() -> ModuleType:
    """scripts/fake_claude.py, loaded by path: scripts are not part of the package."""
    spec = importlib.util.spec_from_file_location("fake_claude", ROOT / "scripts" / "fake_claude.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_claude"] = module
    spec.loader.exec_module(module)
    return module


def remember_titles(fake: ModuleType) -> None:
    """Give the fake planner the whole run's titles, not only the prompt's last 15.

    The prompt shows 15 trials in full (older ones in a few summary lines), and the fake only avoids
    titles it can see, so without this it soon re-proposes old ideas, which the planner rejects as
    already tried: most of the budget then goes on rejections. Token figures are unaffected: usage
    is counted from the request the SDK sent, not from this augmented text.
    """
    plain = fake.plan
    seen: list[str] = []

    def plan(prompt: str) -> dict[str, Any]:
        earlier = "".join(f"\nT0000 - {title} | remembered" for title in seen)
        answer = plain(prompt + earlier)
        seen.extend(h["title"] for h in answer["hypotheses"])
        return answer

    fake.plan = plan  # type: ignore[attr-defined]


def synthetic_repo(root: Path, trials: int, parallel: int, curves: bool = False) -> Path:
    """A committed git repo with the synthetic task; returns its task.toml."""
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN_CURVES if curves else TRAIN)
    # Floats (not ints): the fake writes scaled floats back with three significant digits. A comment
    # between keys lets git merge changes of neighbouring keys (combinations) without a conflict.
    (root / "config.toml").write_text("".join(f"# knob {i}\nk{i:02d} = 1.0\n" for i in range(1, KEYS + 1)))
    task = TASK.format(trials=trials, parallel=parallel) + (CURVES if curves else "")
    (root / "task.toml").write_text(task)
    commit_repo(root, "synthetic task")
    return root / "task.toml"


def run(task_path: Path) -> tuple[Path, str, float]:
    """The whole run in this process; returns the ledger path, how the run ended and its wall time."""
    start = time.perf_counter()
    controller = launch(load_task(task_path), echo=lambda _: None)
    summary = controller.run()
    return controller.rundir.ledger, f"{summary.state}: {summary.reason}", time.perf_counter() - start


def total(call: dict[str, Any]) -> int:
    """Every input token the model read: uncached, written to the cache, read from it."""
    return call["input_tokens"] + call["cache_write_tokens"] + call["cache_read_tokens"]


def show_calls(calls: list[dict[str, Any]]) -> None:
    print(f"{'call':>6} {'uncached':>9} {'cache-write':>12} {'cache-read':>11} {'total':>7}")
    for n in [n for n in CALLS_SHOWN if n < len(calls)] + [len(calls)]:
        c = calls[n - 1]
        print(
            f"{n:>6} {c['input_tokens']:>9} {c['cache_write_tokens']:>12} "
            f"{c['cache_read_tokens']:>11} {total(c):>7}"
        )
    missing = [str(n) for n in CALLS_SHOWN if n > len(calls)]
    if missing:  # several slots are filled per call, so a run makes fewer calls than trials
        print(f"   (no call {', '.join(missing)}: the run made {len(calls)} calls)")
    totals = [total(c) for c in calls]
    peak = max(totals)
    print(f"mean total {statistics.mean(totals):.0f}, max {peak} (call {totals.index(peak) + 1})")
    after = calls[1:]
    seen = sum(total(c) for c in after)
    read = sum(c["cache_read_tokens"] for c in after)
    written = sum(c["cache_write_tokens"] for c in after)
    print(
        f"after the first call: cache reads {read / max(seen, 1):.0%} of input, "
        f"cache writes {written / max(seen, 1):.0%}"
    )
    if len(calls) >= 10:
        ratio = totals[-1] / totals[9]
        print(f"flat? last/10th = {ratio:.2f} ({'flat' if ratio < 1.2 else 'GROWING'} within 20%)")


def show_trials(trials: list[Trial]) -> None:
    """What the run did: enough to tell a realistic run from one of rejected repeats."""
    ideas = [t for t in trials if t.kind.counts_against_budget()]
    decisions = Counter(str(t.decision or t.state) for t in ideas)
    others = Counter(str(t.kind) for t in trials if not t.kind.counts_against_budget())
    print(
        f"trials: {len(trials)}: {len(ideas)} baseline and hypotheses ("
        + ", ".join(f"{n} {d}" for d, n in decisions.most_common())
        + ")"
        + "".join(f", {n} {kind}" for kind, n in others.most_common())
    )
    rejected = Counter(t.reason for t in ideas if t.decision is Decision.REJECTED)
    for reason, n in rejected.most_common(3):
        print(f"   rejected x{n}: {reason[:100]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=200, help="[budget] trials (hypotheses)")
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--keep", type=Path, help="build the repo and run here, and keep them")
    parser.add_argument(
        "--plain-fake", action="store_true", help="the fake as is: it forgets titles older than the prompt"
    )
    parser.add_argument("--curves", action="store_true", help="train.py prints curves: digests in the prompt")
    args = parser.parse_args()
    module = fake_module()
    if not args.plain_fake:
        remember_titles(module)
    fake = module.FakeClaude().start()
    # The real SDK, pointed at the fake: nothing leaves the machine, and no real key is needed.
    os.environ.update(ANTHROPIC_BASE_URL=fake.url, ANTHROPIC_API_KEY="sk-ant-bench-not-a-real-key-000")
    root = args.keep or Path(tempfile.mkdtemp(prefix="ara-tokens-"))
    try:
        task = synthetic_repo(root / "repo", args.trials, args.parallel, args.curves)
        ledger_path, ended, wall = run(task)
        ledger = Ledger.open(ledger_path, readonly=True)
        try:
            trials, calls = ledger.trials(), ledger.calls()
        finally:
            ledger.close()
    finally:
        fake.stop()
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    planner = [c for c in calls if c["role"] == "planner"]
    print(f"run {ended}; wall {wall:.1f} s, parallel {args.parallel}")
    show_trials(trials)
    print(f"planner calls: {len(planner)} ({sum(1 for c in planner if c['error'])} with errors)")
    if planner:
        show_calls(planner)
    asked = fake.calls("propose_hypotheses")
    if args.curves and asked:  # the curve lines under the history's trials, as the last call sent them
        sent = [m.get("content") for m in asked[-1]["body"].get("messages", [])]
        texts = [c if isinstance(c, str) else "\n".join(b.get("text", "") for b in c) for c in sent]
        lines = [line for text in texts for line in text.splitlines() if line.startswith("  curve ")]
        print(f"curve lines in the last call: {len(lines)}, longest {max(map(len, lines), default=0)} chars")
    if args.keep:
        print(f"kept: {ledger_path.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
