"""Hypotheses no run should die of: each ends as its trial's `rejected`, with a reason, and the
run goes on (issue 14's crash cases, then a fuzz of generated hostile hypotheses)."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.planners.base import PlanContext
from slurm_autoresearch.planners.claude import parse_hypothesis
from slurm_autoresearch.trial import Decision

from .conftest import commit_all, write_task

PERMISSIVE = 'allow = ["*.py", "**/*.py", "config.toml", "src/**"]'


def _permissive(repo: Path, ideas: str, trials: int) -> Path:
    path = write_task(repo, ideas, trials=trials, parallel=1)
    path.write_text(path.read_text().replace('allow = ["train.py", "config.toml", "src/**"]', PERMISSIVE))
    return path


def _idea(title: str, path: str, search: str = "", replace: str = "x = 1\n") -> str:
    return (
        f"[[ideas]]\ntitle = {json.dumps(title)}\n[[ideas.edits]]\npath = {json.dumps(path)}\n"
        f"search = {json.dumps(search)}\nreplace = {json.dumps(replace)}\n"
    )


@pytest.mark.parametrize(
    ("path", "why"),
    [
        ("train.py/x.py", "train.py"),  # through a file: FileExistsError / NotADirectoryError
        ("src/" + "n" * 300 + ".py", "longer than 255 bytes"),  # ENAMETOOLONG
    ],
)
def test_an_edit_the_filesystem_refuses_is_rejected_and_the_run_goes_on(
    toy_repo: Path, path: str, why: str
) -> None:
    ideas = _idea("odd path", path) + '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n'
    task = _permissive(toy_repo, ideas, trials=3)
    controller = launch(load_task(task), echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    by = {t.title: t for t in ledger.trials()}
    state = ledger.meta()["state"]
    ledger.close()
    assert state == "finished"
    odd = by["odd path"]
    assert odd.decision is Decision.REJECTED and why in odd.reason, odd.reason
    assert by["x to 2"].decision is Decision.KEEP


# -- fuzz: generated hostile hypotheses through the planner's parser and the workspace ----------

TRAIN_LINE = 'value = -(cfg["x"] - 3) ** 2 - (cfg["y"] + 1) ** 2\n'
ODD_TEXT = [
    "",
    " ",
    "x" * 5000,
    "\x00nul",
    "\x1b[2J\x1b]0;title\x07",
    "\x1b]52;c;ZWNobyBwd25lZA==\x07",
    "\x7f\x85\x9b",
    "\u202eevil\u202c",
    "\u200b\u2066zero width\u2069",
    "[/x] [bold]b[/bold] [link=https://e.x]c[/link]",
    "![x](http://e.x/a.png) <script>alert(1)</script>",
    "ünïcödé 🚀 日本語",
    "\ud800 lone surrogate",
    "line\nbreak\r\n",
    "tab\there",
    "$(reboot); `id` | rm -rf ~",
]
ODD_PATHS = [
    "train.py",
    "config.toml",
    "src/new.py",
    "src/a/b/c.py",
    "train.py/x.py",
    "config.toml/y.py",
    "src/" + "n" * 300 + ".py",
    "src/" + "d/" * 80 + "deep.py",
    "../outside.py",
    "/etc/passwd",
    ".git/config",
    "src/.git/hooks/post-checkout",
    "evaluate.py",
    "src/a\x00b.py",
    "src/\u202ex.py",
    "src/ünï.py",
    "src/a b.py",
    "src/x.py/",
    "",
    ".",
    "src/..",
    "src//double.py",
    "src\\back.py",
    "src/\ud800.py",
    "src/new.py",  # collides with an earlier edit of the same hypothesis, now and then
]


def _text(rng: random.Random) -> object:
    roll = rng.random()
    if roll < 0.08:
        return rng.choice([None, 7, 1.5, True, [], {}, ["a"]])
    return rng.choice(ODD_TEXT) + (rng.choice(ODD_TEXT) if rng.random() < 0.3 else "")


def _edit(rng: random.Random) -> object:
    if rng.random() < 0.05:
        return rng.choice(["edit", 3, None, [], {"path": "train.py"}])
    path: object = rng.choice(ODD_PATHS)
    search: object = rng.choice(["", "", TRAIN_LINE, "x = 0.5  # the x knob\n", "absent text\n"])
    replace: object = (
        _text(rng) if rng.random() < 0.5 else rng.choice(["x = 1\n", TRAIN_LINE, "print('hi')\n"])
    )
    if rng.random() < 0.05:
        path = rng.choice([None, 5, ["train.py"]])
    if rng.random() < 0.02:
        replace = "y" * 400_000  # over the file limit
    return {"path": path, "search": search, "replace": replace}


def fuzz_items(n: int, seed: int) -> list[object]:
    """n proposals as a model might send them: odd text, odd paths, wrong types, collisions."""
    rng = random.Random(seed)
    items: list[object] = []
    for i in range(n):
        if rng.random() < 0.04:
            items.append(rng.choice(["just text", 42, None, [1, 2]]))
            continue
        if rng.random() < 0.1:  # a plausible change among them, built on whatever the incumbent is
            new = f"src/fuzz_{i}.py"
            items.append(
                {"title": f"plausible {i}", "edits": [{"path": new, "search": "", "replace": "x = 1\n"}]}
            )
            continue
        title = _text(rng) if rng.random() < 0.4 else f"fuzz {i} " + rng.choice(["lr", "x", "ünï", "y"])
        edits = [_edit(rng) for _ in range(rng.choice([0, 1, 1, 1, 2, 3, 12]))]
        item: dict[str, object] = {"title": title, "rationale": _text(rng), "edits": edits}
        if rng.random() < 0.1:
            item["expected"] = _text(rng)
        items.append(item)
    return items


class FuzzPlanner:
    """Hands out generated proposals through the Claude planner's own parser, then nothing more."""

    name = "fuzz"

    def __init__(self, items: list[object]) -> None:
        self.items = list(items)

    def baseline(self, files: dict[str, str]) -> Hypothesis:
        return Hypothesis.baseline()

    def propose(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        batch, self.items = self.items[:n], self.items[n:]
        return [parse_hypothesis(item, 256 * 1024) for item in batch]


FUZZ_N = 520


def test_fuzzed_hypotheses_never_end_a_run(toy_repo: Path) -> None:
    task = _permissive(toy_repo, "", trials=FUZZ_N + 1)
    task.write_text(task.read_text().replace("[budget]\n", "[budget]\ncrash_limit = 100000\n"))
    items = fuzz_items(FUZZ_N, seed=14)
    controller = launch(load_task(task), planner=FuzzPlanner(items), echo=lambda _: None)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    trials, meta = ledger.trials(), ledger.meta()
    ledger.close()
    assert meta["state"] == "finished", meta.get("end_reason")
    ideas = [t for t in trials if t.kind.is_hypothesis() and t.title != "baseline"]
    assert len(ideas) == FUZZ_N
    for t in trials:
        assert t.decision is not None, (t.id, t.title, t.state)
        if t.decision is Decision.REJECTED:
            assert t.reason.strip(), (t.id, t.title)
    rejected = sum(t.decision is Decision.REJECTED for t in ideas)
    measured = sum(t.job_state is not None for t in ideas)
    assert rejected + measured >= FUZZ_N and measured >= 20  # some got through and ran


# -- views: model-written text never drives a terminal ------------------------------------------

NASTY = (
    "[/x] [bold]b[/bold] [link=https://e.x]Click[/link] "
    "\x1b[2J\x1b]0;pwned\x07\x1b]52;c;ZWNobyBwd25lZA==\x07 \x9b31m \x7f \u202eevil\u202c"
)


def test_every_view_shows_hostile_text_without_markup_or_escapes(toy_repo: Path) -> None:
    import subprocess
    import sys

    toml_nasty = json.dumps(NASTY)  # JSON escapes are TOML escapes for these characters
    printer = json.dumps(f"print({NASTY!r})\n")  # the trial prints it too: the log and the diff carry it
    ideas = (
        f"[[ideas]]\ntitle = {toml_nasty}\nrationale = {toml_nasty}\n"
        f'[[ideas.edits]]\npath = "src/nasty.py"\nsearch = "pass\\n"\nreplace = {printer}\n'
    )
    (toy_repo / "src").mkdir(exist_ok=True)
    (toy_repo / "src" / "nasty.py").write_text("pass\n")
    task = write_task(toy_repo, ideas, trials=2, parallel=1)
    task.write_text(task.read_text().replace('"python train.py"', '"python src/nasty.py; python train.py"'))
    commit_all(toy_repo, "nasty")
    controller = launch(load_task(task), echo=lambda _: None)
    controller.run()
    run = str(controller.rundir.path)
    ara = str(Path(sys.executable).parent / "ara")
    views = {
        "status": [ara, "status", run],
        "watch": [ara, "watch", run, "--once"],
        "show": [ara, "show", run, "T0002"],
        "diff": [ara, "diff", run, "T0002"],
        "logs": [ara, "logs", run, "T0002"],
        "guide": [ara, "guide", run, NASTY],
    }
    for name, cmd in views.items():
        out = subprocess.run(cmd, capture_output=True, timeout=60)
        assert out.returncode == 0, (name, out.stderr.decode(errors="replace"))
        shown = out.stdout.decode("utf-8")
        for bad in ("\x1b", "\x07", "\x9b", "\x7f", "\u202e"):
            assert bad not in shown, (name, repr(bad), shown[-2000:])
        if name in ("status", "show"):
            assert "link=" in shown, (name, shown[-1500:])  # the title is shown as text, not as a link
    report = (controller.rundir.path / "report.md").read_text()
    trial_report = (controller.rundir.trial_dir("T0002") / "report.md").read_text()
    for text in (report, trial_report):
        assert "\x1b" not in text and "\u202e" not in text
    assert "![" not in trial_report and "<script" not in trial_report
