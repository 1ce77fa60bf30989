"""Benchmark: the example with the Claude planner and summarizer against the fake Messages API.

    python scripts/bench_claude.py [--trials 12]

Prints: planner input tokens per call at trial 10 and trial 200 of a simulated history (the fake
counts four characters a token) and the cached share after the first call; then a real run of
the example (local executor, 2 at once) with planner and summarizer through the SDK: code edits
kept, summarizer calls per trial, log bytes read per look, tokens and cost per trial.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.llm import LLM
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.planners import OfflinePlanner, PlanContext
from slurm_autoresearch.planners.claude import ClaudePlanner
from slurm_autoresearch.playbook import generic_playbook
from slurm_autoresearch.trial import Decision, Trial, TrialState

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mil-stain"


def fake_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("fake_claude", ROOT / "scripts" / "fake_claude.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["fake_claude"] = module
    spec.loader.exec_module(module)
    return module


def history(n: int) -> list[Trial]:
    out = []
    for i in range(1, n + 1):
        h = Hypothesis(f"hypothesis {i}: warmup for {i * 10} steps then cosine decay", "because " * 10)
        out.append(
            Trial(
                id=f"T{i:04d}",
                seq=i,
                title=h.title,
                source="anthropic",
                hypothesis=h,
                state=TrialState.DONE,
                decision=Decision.KEEP if i % 7 == 0 else Decision.DISCARD,
                parent_trial=f"T{max(1, i - 1):04d}",
                metric=0.6 + i / 1000,
                learning=f"warmup of {i * 10} steps moves macro_f1 by {(i % 9 - 4) / 100:+.2f}",
            )
        )
    return out


def example_repo(tmp: Path, trials: int) -> Path:
    repo = tmp / "repo"
    shutil.copytree(EXAMPLE, repo / "mil-stain", ignore=shutil.ignore_patterns(".ara", "predictions.json"))
    task = repo / "mil-stain" / "task.toml"
    text = task.read_text().replace("trials = 12 ", f"trials = {trials} ")
    text = text.replace(
        "[run]\n", '[run]\nexecutor = "local"\nplanner = "anthropic"\nsummarizer = "anthropic"\n'
    )
    # Without the backlog the planner proposes everything, code edits included.
    task.write_text(text.split("[[ideas]]")[0])
    for args in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=b", "-c", "user.email=b@b", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *args], cwd=repo, check=True)
    return task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=12)
    args = parser.parse_args()
    fake = fake_module().FakeClaude().start()
    os.environ.update(ANTHROPIC_BASE_URL=fake.url, ANTHROPIC_API_KEY="sk-ant-bench-not-a-real-key-000")
    with tempfile.TemporaryDirectory() as tmp:
        task = load_task(example_repo(Path(tmp), args.trials))
        files = {name: (EXAMPLE / name).read_text() for name in ("train.py", "config.toml")}
        planner = ClaudePlanner(LLM(task.spec.models), OfflinePlanner(task.spec))
        sizes = {}
        for n in (10, 200):
            trials = history(n)
            planner.propose(PlanContext(task, trials, trials[-1], files, 10, playbook=generic_playbook()), 2)
            call = planner.llm.take_calls()[-1]
            sizes[n] = (call.input_tokens, call.cache_write_tokens, call.cache_read_tokens)
        total = {n: sum(v) for n, v in sizes.items()}
        print(
            f"planner input tokens per call: trial 10 {total[10]}, trial 200 {total[200]} "
            f"(ratio {total[200] / total[10]:.2f}); cached share of the second call "
            f"{sizes[200][2] / total[200]:.0%}"
        )

        controller = launch(task, echo=lambda _: None)
        controller.run()
        ledger = Ledger.open(controller.rundir.ledger, readonly=True)
        trials, calls = ledger.trials(), ledger.calls()
        summaries: dict[str, int] = {}
        for c in calls:
            if c["role"] == "summarizer":
                summaries[c["trial"]] = summaries.get(c["trial"], 0) + 1
        code = [t for t in trials if any(e.path.endswith(".py") for e in t.hypothesis.edits)]
        planner_calls = [c for c in calls if c["role"] == "planner"]
        after_first = planner_calls[1:]
        cached = sum(c["cache_read_tokens"] for c in after_first)
        seen = sum(c["input_tokens"] + c["cache_write_tokens"] + c["cache_read_tokens"] for c in after_first)
        print(
            f"example run: {len(trials)} trials, {len(code)} with code edits "
            f"({', '.join(f'{t.id} {t.decision}' for t in code)}); best "
            f"{max(t.metric or 0 for t in trials):.4f} vs baseline {trials[0].metric:.4f}"
        )
        print(
            f"planner calls {len(planner_calls)}, cached share of input after the first: "
            f"{cached / max(seen, 1):.0%}"
        )
        print(
            f"summarizer calls per trial: max {max(summaries.values())}, "
            f"mean {sum(summaries.values()) / len(trials):.2f}"
        )
        print(
            f"log read per look: max {controller.monitor.max_read} B over {controller.monitor.looks} looks "
            f"(tail bound {task.spec.monitor.tail_kb * 1024} B)"
        )
        for t in trials:
            print(f"   {t.id} {t.decision!s:8s} {t.llm_tokens:6d} tokens ${t.llm_usd:.5f}  {t.title[:60]}")
        usd, tokens = ledger.llm_totals()
        print(f"run total: {tokens} tokens, ${usd:.4f} (fake usage, list prices)")
        ledger.close()
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
