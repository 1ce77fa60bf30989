"""The vl-align example with its code changes planned by Claude, here the fake Messages API.

    python scripts/demo_vl_align.py [--dir DIR]

Copies examples/vl-align into a fresh git repository (DIR, default a temporary folder) without
its [[ideas]] backlog, starts scripts/fake_claude.py on loopback with four scripted planner
replies, one hypothesis each, as a model that reads each result before the next would write
them, and runs the real CLI on it:

    ANTHROPIC_API_KEY=... ANTHROPIC_BASE_URL=http://127.0.0.1:PORT ara submit task.toml
        --set run.planner=anthropic --set run.summarizer=anthropic --set run.executor=local
        --set run.parallel=1 --set run.plan_ahead=0 --set budget.trials=5

One trial at a time, planned only when a slot is free, so each planning call has seen every
result before it. The summarizer is the fake's default (its health check cancels a trial whose
log tail shows a NaN loss; its judgement follows the decision rule). The hypotheses:

1. an auxiliary prototype-classification loss (helps: the diagnosis codes are right where half
   of the train pairs are not);
2. sharp attention pooling instead of the mean, with exp() of the scores unguarded: the loss
   goes NaN (the digest says `diverged`);
3. the same attention with a max-subtracted softmax, as a planner would first fix the NaN it was
   shown: no NaN, but plain SGD through the sharp softmax swings (the digest says `unstable`);
4. that attention with the gradient norm clipped at 1: stable, and better than the incumbent.

It prints the trial table (`ara status`), the curve digests from report.md, what report.html
says of them, and the curve lines the planner was shown before hypotheses 3 and 4; it exits 1
when the run did not go as above.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "examples" / "vl-align"
TRIALS = 5  # the baseline and the four hypotheses


def fake_claude() -> Any:
    """scripts/fake_claude.py, loaded by path (scripts are not a package)."""
    if "fake_claude" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fake_claude", ROOT / "scripts" / "fake_claude.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["fake_claude"] = module
        spec.loader.exec_module(module)
    return sys.modules["fake_claude"]


def hypotheses() -> list[dict[str, Any]]:
    """The four hypotheses, their edits those of the example's backlog (checked there by `ara
    submit` and tests), their words those of a planner that has read the results so far."""
    ideas = tomllib.loads((EXAMPLE / "task.toml").read_text())["ideas"]
    aux, sharp, fixed = (idea["edits"] for idea in ideas)
    attn_layer, softmax, clip = fixed
    assert sharp[0] == attn_layer  # both add the same attention layer

    def edits(*blocks: dict[str, str]) -> list[dict[str, str]]:
        return [{"path": b["path"], "search": b["search"], "replace": b["replace"]} for b in blocks]

    return [
        {
            "title": "Auxiliary prototype-classification loss",
            "rationale": (
                "The task says half the train pairs are mislinked while the diagnosis codes are right: "
                "classify both embeddings against learned class prototypes so the towers get a clean "
                "signal besides the noisy contrastive targets."
            ),
            "expected": "mean_recall +0.03 to +0.06",
            "risk": "low",
            "edits": edits(*aux),
        },
        {
            "title": "Sharp attention pooling instead of the mean",
            "rationale": (
                "Only 8-20% of a slide's patches show the case; the mean dilutes them with tissue "
                "that looks like other cases. Attention at temperature 0.1 can pool the lesion patches."
            ),
            "expected": "a large gain if the attention finds the lesion patches",
            "risk": "medium",
            "edits": edits(*sharp),
        },
        {
            "title": "Sharp attention with a max-subtracted softmax",
            "rationale": (
                "The sharp attention trial diverged: its loss went NaN, exp() of scores/0.1 overflowed "
                "(inf/inf). A masked softmax subtracts the max before exp, so large scores cannot "
                "overflow; keep the attention, which was ahead of the incumbent before the NaN."
            ),
            "expected": "no NaN; the attention's gain",
            "risk": "medium",
            "edits": edits(attn_layer, softmax),
        },
        {
            "title": "Sharp attention, max-subtracted softmax and gradient clipping at norm 1",
            "rationale": (
                "With the softmax fixed there is no NaN, but the curve is unstable: val_recall swings "
                "between checks and ends below the incumbent. Plain SGD takes huge steps through a "
                "softmax at temperature 0.1 (its gradients scale with 1/temperature). Clipping the "
                "gradient norm at 1 bounds every step."
            ),
            "expected": "stable curve; mean_recall above the incumbent",
            "risk": "low",
            "edits": edits(attn_layer, softmax, clip),
        },
    ]


def make_repo(dest: Path) -> Path:
    """The example, committed in a fresh repository, without its backlog (the planner is Claude's
    here); returns the task file."""
    folder = dest / "examples" / "vl-align"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".ara", "embeddings.npz", "__pycache__"))
    task = folder / "task.toml"
    task.write_text(task.read_text().split("[[ideas]]")[0].rstrip() + "\n")
    (dest / ".gitignore").write_text(".ara/\nembeddings.npz\n__pycache__/\n")
    git = ["git", "-c", "user.name=demo", "-c", "user.email=demo@example.org"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-qm", "vl-align without its backlog"], cwd=dest, check=True)
    return task


def ara(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slurm_autoresearch.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
    )


def run_demo(dest: Path, trials: int = TRIALS, extra: tuple[str, ...] = ()) -> dict[str, Any]:
    """Run it (`extra`: more `--set` settings); what came of it: the run directory, the status
    document, the digests, the planner's prompts, the submit output and its wall time."""
    task = make_repo(dest)
    fake_module = fake_claude()
    fake = fake_module.FakeClaude().start()
    try:
        for h in hypotheses():
            fake.push(fake_module.Reply(tool_input={"hypotheses": [h]}), tool="propose_hypotheses")
        env = dict(os.environ, ANTHROPIC_API_KEY="fake-demo-key", ANTHROPIC_BASE_URL=fake.url)
        settings = [
            "run.planner=anthropic",
            "run.summarizer=anthropic",
            "run.executor=local",
            "run.parallel=1",
            "run.plan_ahead=0",
            f"budget.trials={trials}",
            *extra,
        ]
        start = time.time()
        submit = ara(
            "submit", "task.toml", *(x for s in settings for x in ("--set", s)), cwd=task.parent, env=env
        )
        wall = time.time() - start
        prompts = [
            r["body"]["messages"][0]["content"]
            for r in fake.calls("propose_hypotheses")
            if isinstance(r["body"]["messages"][0]["content"], str)
        ]
    finally:
        fake.stop()
    status = ara("status", "--json", cwd=task.parent)
    document = json.loads(status.stdout) if status.returncode == 0 else {}
    rundir = Path(document["run"]["dir"]) if document else None
    digests: dict[str, dict[str, Any]] = {}
    if rundir is not None:
        for path in sorted((rundir / "trials").glob("T*/digest.json")):
            digests[path.parent.name] = json.loads(path.read_text())
    return {
        "task": task,
        "rundir": rundir,
        "status": document,
        "digests": digests,
        "prompts": prompts,
        "submit": submit,
        "wall": wall,
    }


def verdict(result: dict[str, Any]) -> list[str]:
    """What did not go as the module's docstring says; empty when all did."""
    trials = {t["id"]: t for t in result["status"].get("trials", []) if t["kind"] != "repeat"}
    by_title = {t["title"]: t for t in trials.values()}
    names = [h["title"] for h in hypotheses()]
    problems = []
    if result["submit"].returncode != 0:
        problems.append(f"ara submit exited {result['submit'].returncode}")
    want = {names[0]: "keep", names[1]: "crash", names[2]: "discard", names[3]: "keep"}
    for title, decision in want.items():
        got = by_title.get(title, {}).get("decision")
        if got != decision:
            problems.append(f"{title!r}: {got}, expected {decision}")
    flags = {
        title: result["digests"].get(by_title.get(title, {}).get("id", ""), {}).get("flags", [])
        for title in names
    }
    if "diverged" not in flags[names[1]]:
        problems.append(f"{names[1]!r}: digest flags {flags[names[1]]}, expected diverged")
    if "unstable" not in flags[names[2]]:
        problems.append(f"{names[2]!r}: digest flags {flags[names[2]]}, expected unstable")
    if not all(t.get("source") in ("baseline", "anthropic") for t in trials.values()):
        problems.append("a trial did not come from the anthropic planner")
    return problems


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--dir", type=Path, help="an empty or absent folder for the repository (default: temporary)"
    )
    parser.add_argument("--set", dest="extra", action="append", default=[], help="one more --set for submit")
    args = parser.parse_args()
    if args.dir:
        args.dir.mkdir(parents=True, exist_ok=True)
        if any(args.dir.iterdir()):
            sys.exit(f"{args.dir} is not empty")
        dest, keep = args.dir, True
    else:
        dest, keep = Path(tempfile.mkdtemp(prefix="vl-align-demo-")), False
    result = run_demo(dest, extra=tuple(args.extra))
    print(result["submit"].stdout[-6000:], result["submit"].stderr[-2000:], sep="\n")
    print(f"ara submit: {result['wall']:.0f} s wall\n")
    print(ara("status", cwd=result["task"].parent).stdout)
    if result["rundir"] is not None:
        report = (result["rundir"] / "report.md").read_text()
        curves = report.split("## Learning curves that say something", 1)[-1].split("\n## ", 1)[0]
        print("report.md, learning curves that say something:" + curves)
        html = (result["rundir"] / "report.html").read_text()
        for flag in ("diverged", "unstable"):
            print(f"report.html mentions {flag!r} {len(re.findall(flag, html))} times")
    for i, prompt in enumerate(result["prompts"][2:4], start=3):
        lines = [line for line in prompt.splitlines() if "curve " in line or re.match(r"^T\d{4} ", line)]
        print(f"\nthe planner's history before hypothesis {i} (trial and curve lines):")
        print("\n".join(lines[-8:]))
    problems = verdict(result)
    print("\n" + ("as expected" if not problems else "NOT as expected:\n- " + "\n- ".join(problems)))
    print(f"repository: {dest}" + ("" if keep else " (temporary, removed)"))
    if not keep:
        shutil.rmtree(dest, ignore_errors=True)
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
