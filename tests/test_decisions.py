"""Decisions a researcher can trust: noise margins, confirmation, screening, combinations,
tampering, holdout, re-runs and simplicity, on real git, SQLite and subprocesses."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
import tomli_w

from benchmarks.decisions import DEFAULT_RULE, NOISE_RULE, PLAIN_RULE, synthetic_repo
from slurm_autoresearch import fidelity
from slurm_autoresearch.decide import judge, net_lines
from slurm_autoresearch.errors import BaselineError
from slurm_autoresearch.evidence import look_level, looks, noise, t_quantile
from slurm_autoresearch.executors.sandbox import probe
from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.planners.base import history
from slurm_autoresearch.rundir import RunDir
from slurm_autoresearch.spec import TaskSpec
from slurm_autoresearch.task import read_spec
from slurm_autoresearch.trial import Decision, Trial, TrialKind, TrialState
from slurm_autoresearch.views.status import status_document

from .conftest import TASK, commit_all, write_task

ARA = [sys.executable, "-m", "slurm_autoresearch.cli"]


def _spec(extra: str = "", repeats: int = 1) -> TaskSpec:
    import tomllib

    text = TASK.format(trials=5, parallel=1).replace("repeats = 1 ", f"repeats = {repeats} ")
    return TaskSpec.model_validate(tomllib.loads(text + extra))


def _t(seq: int, commit: str, metric: float | None, **kw: object) -> Trial:
    fields: dict[str, object] = {"state": TrialState.DONE, "steps": 5, "decision": Decision.DISCARD}
    fields.update(kw)
    return Trial(f"T{seq:04d}", seq, "t", "idea", Hypothesis("t"), commit=commit, metric=metric, **fields)  # type: ignore[arg-type]


def _run(task_path: Path) -> tuple[RunDir, list[Trial], list[str]]:
    lines: list[str] = []
    controller = launch(load_task(task_path), echo=lines.append)
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    try:
        return controller.rundir, ledger.trials(), lines
    finally:
        ledger.close()


# -- the arithmetic ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("p", "dof", "table"),
    [
        (0.99, 1, 31.821),
        (0.99, 2, 6.965),
        (0.99, 3, 4.541),
        (0.99, 4, 3.747),
        (0.99, 10, 2.764),
        (0.95, 3, 2.353),
        (0.99, 60, 2.390),
        (0.975, 30, 2.042),
        (0.01, 5, -3.365),
    ],
)
def test_t_quantile_matches_the_tables(p: float, dof: int, table: float) -> None:
    assert t_quantile(p, dof) == pytest.approx(table, abs=0.0015)


def test_noise_is_pooled_over_commits_with_repeats_at_one_step_budget() -> None:
    spec = _spec()
    trials = [
        _t(1, "a", 1.0),
        _t(2, "a", 3.0),  # sd of a: sqrt(2)
        _t(3, "b", 5.0),
        _t(4, "b", 5.0),
        _t(5, "b", 8.0),  # variance of b: 3
        _t(6, "c", 9.0),  # one run: no spread
        _t(7, "a", 100.0, steps=50),  # another fidelity
        _t(8, "a", -50.0, decision=Decision.CRASH),  # not evidence
    ]
    found = noise(trials, 5, spec)
    assert found.dof == 3 and found.groups == 2
    assert found.sigma == pytest.approx(((2 * 1 + 3 * 2) / 3) ** 0.5)
    assert noise(trials[:1], 5, spec).sigma is None


def _runs(commit: str, values: list[float], first: int) -> list[Trial]:
    return [_t(first + i, commit, v, decision=Decision.REPEAT) for i, v in enumerate(values)]


def test_looks_double_to_the_most_runs_and_share_the_level() -> None:
    assert looks(12) == [1, 2, 4, 8, 12] and looks(1) == [1] and looks(8) == [1, 2, 4, 8]
    assert look_level(0.02, 12) == pytest.approx(0.005) and look_level(0.02, 1) == 0.02


def test_judge_races_keeps_drops_and_prefers_the_simpler() -> None:
    spec = _spec(repeats=5)  # the defaults: level 0.02 over looks at 1, 2, 4, 8, 12 runs
    base = _runs("base", [0.50, 0.51, 0.49, 0.50, 0.50], 1)
    inc = base[0]
    inc.decision = Decision.KEEP
    # one run far ahead is not kept alone: it earns a second
    big = _t(10, "big", 0.56, state=TrialState.WAITING, decision=None)
    verdict = judge(big, [*base, big], inc, spec)
    assert verdict.decision is None and verdict.confirm == 1 and verdict.race == 0
    assert "racing" in verdict.reason and verdict.evidence["look_level"] == pytest.approx(0.005)  # type: ignore[index]
    verdict = judge(big, [*base, big, *_runs("big", [0.555], 20)], inc, spec)
    assert verdict.decision is Decision.KEEP and verdict.evidence["rule"] == "noise"  # type: ignore[index]
    assert len(verdict.evidence["candidate"]) == 2  # type: ignore[index]
    # one lucky run cannot decide: the mean passes, but not without that run
    lucky = _t(11, "lucky", 0.60, state=TrialState.WAITING, decision=None)
    spread = [r for k in range(5) for r in _runs(f"o{k}", [0.50, 0.51, 0.49, 0.50, 0.50], 100 + 10 * k)]
    verdict = judge(lucky, [*base, *spread, lucky, *_runs("lucky", [0.505], 30)], inc, spec)
    assert verdict.decision is None and verdict.confirm == 2
    evidence = verdict.evidence or {}
    assert evidence["delta"] > evidence["margin"] and min(evidence["without_luckiest"]) < 0
    # a candidate behind the incumbent is dropped at once; one ahead races on
    behind = _t(12, "behind", 0.495, state=TrialState.WAITING, decision=None)
    verdict = judge(behind, [*base, behind], inc, spec)
    assert verdict.decision is Decision.DISCARD and "unpromising" in verdict.reason
    small = _t(13, "small", 0.515, state=TrialState.WAITING, decision=None)
    assert judge(small, [*base, small], inc, spec).decision is None
    verdict = judge(small, [*base, small], inc, spec, confirm=False)
    assert verdict.decision is Decision.DISCARD and "no more jobs may start" in verdict.reason
    # at the last look it is decided on all its runs
    many = _runs("small", [0.50, 0.51, 0.50, 0.505, 0.50, 0.51, 0.50, 0.505, 0.50, 0.51, 0.50], 40)
    verdict = judge(small, [*base, small, *many], inc, spec)
    assert verdict.decision is Decision.DISCARD and "after 12 runs" in verdict.reason
    # a tie that removes code is kept
    tie = _t(14, "tie", 0.499, state=TrialState.WAITING, decision=None)
    patch = "--- a/train.py\n+++ b/train.py\n-a\n-b\n+c\n"
    assert net_lines(patch) == -1
    verdict = judge(tie, [*base, tie], inc, spec, patch)
    assert verdict.decision is Decision.KEEP and "simpler (-1 lines)" in verdict.reason
    plain = _spec('\n[decide]\nrule = "min_delta"\n', repeats=5)
    assert judge(small, [*base, small], inc, plain).decision is Decision.KEEP  # min_delta 0: any gain
    single = _spec("\n[decide]\nconfirm = 0\n", repeats=5)  # one run, tested at the whole level
    assert judge(big, [*base, big], inc, single).decision is Decision.KEEP


def test_the_incumbent_is_raced_to_as_many_runs_as_the_candidate() -> None:
    spec = _spec(repeats=2)
    base = _runs("base", [0.50, 0.51], 1)
    inc = base[0]
    inc.decision = Decision.KEEP
    cand = _t(10, "cand", 0.51, state=TrialState.WAITING, decision=None)
    others = _runs("other", [0.49, 0.50, 0.51, 0.50], 20)  # dof from other commits
    verdict = judge(cand, [*base, *others, cand, *_runs("cand", [0.52, 0.515, 0.52], 30)], inc, spec)
    assert verdict.decision is None and verdict.confirm == 4 and verdict.race == 6  # both to 8 runs


def test_a_jump_over_the_incumbent_is_confirmed_before_it_is_kept() -> None:
    spec = _spec("\n[decide]\njump = 1.5\nconfirm = 0\n")
    inc = _t(1, "base", 2.0, decision=Decision.KEEP)
    huge = _t(2, "huge", 5.0, state=TrialState.WAITING, decision=None)
    verdict = judge(huge, [inc, huge], inc, spec)
    assert verdict.decision is None and verdict.confirm == 1 and "2.5x the incumbent" in verdict.reason
    again = _t(3, "huge", 5.0, decision=Decision.REPEAT)
    assert judge(huge, [inc, huge, again], inc, spec).decision is Decision.KEEP


def test_promotion_takes_the_best_of_a_round_that_beat_the_incumbents_screen() -> None:
    spec = _spec("\n[fidelity]\nscreen_steps = 2\npromote = 2\n")
    members = [
        _t(i, f"c{i}", v, fidelity="screen", steps=2) for i, v in [(1, 0.3), (2, 0.9), (3, 0.6), (4, 0.7)]
    ]
    choice = fidelity.choose(members, [0.65], spec)
    assert [t.id for t in choice.promoted] == ["T0002", "T0004"]
    assert "does not beat" in choice.reasons["T0003"] and "promoted" in choice.reasons["T0002"]
    assert fidelity.choose(members, [0.95], spec).promoted == []
    top = _spec('\n[fidelity]\nscreen_steps = 2\npromote_when = "top"\n')
    assert [t.id for t in fidelity.choose(members, [0.95], top).promoted] == ["T0002"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ('[decide]\nrule = "noise"\n', '[decide] rule = "noise" needs a measured spread'),
        ("[fidelity]\nscreen_steps = 5\n", "[fidelity] screen_steps (5) must be below full_steps (5)"),
        ("[decide]\nlevel = 0.7\n", "[decide] level"),
    ],
)
def test_bad_decision_settings_are_task_errors(toy_repo: Path, extra: str, message: str) -> None:
    path = write_task(toy_repo, extra)
    out = subprocess.run([*ARA, "submit", "--check", str(path)], cwd=toy_repo, capture_output=True, text=True)
    assert out.returncode == 2 and message in out.stderr, out.stderr
    assert len(out.stderr.strip().splitlines()) <= 2


# -- whole runs -------------------------------------------------------------------------------


def _keeps(trials: list[Trial]) -> list[Trial]:
    return [t for t in trials if t.decision is Decision.KEEP and t.kind is not TrialKind.BASELINE]


def test_pure_noise_the_noise_rule_keeps_nothing_the_plain_rule_keeps_several(tmp_path: Path) -> None:
    _, noisy, _ = _run(synthetic_repo(tmp_path / "noise", ideas=19, salt=1, decide=NOISE_RULE))
    _, plain, _ = _run(synthetic_repo(tmp_path / "plain", ideas=19, salt=1, decide=PLAIN_RULE))
    assert len(_keeps(noisy)) <= 1 < len(_keeps(plain))
    base = [t for t in noisy if t.of == "T0001"]
    assert [t.seed for t in base[:4]] == [1, 2, 3, 4] and all(t.decision is Decision.REPEAT for t in base)
    assert {t.source for t in base[4:]} <= {"race", "noise"}  # later seeds: raced, or idle slots
    assert noisy[0].evidence and len(noisy[0].evidence["candidate"]) == 5
    assert all(t.state is TrialState.DONE and t.decision for t in noisy + plain)
    assert sum(1 for t in noisy if t.kind.is_hypothesis()) == 20  # budget.trials counts hypotheses


def test_by_default_the_baseline_runs_three_seeds_and_the_noise_rule_decides(tmp_path: Path) -> None:
    rundir, trials, _ = _run(synthetic_repo(tmp_path / "default", ideas=3, salt=3, decide=DEFAULT_RULE))
    base = [t for t in trials if t.of == "T0001"]
    assert [t.seed for t in base[:2]] == [1, 2] and all(t.kind is TrialKind.REPEAT for t in base)
    assert [t.source for t in base[:2]] == ["repeat", "repeat"]  # the first array's noise estimate
    assert all(t.evidence and t.evidence["rule"] == "noise" for t in trials if t.kind is TrialKind.HYPOTHESIS)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    doc = status_document(rundir, ledger)
    ledger.close()
    assert doc["decisions"]["rule"] == "noise" and doc["decisions"]["repeats"] == 3
    assert doc["decisions"]["sigma"] > 0 and not doc["decisions"]["unmeasurable"]


def test_seeds_that_change_nothing_are_said_plainly(toy_repo: Path) -> None:
    """The toy code never reads ARA_SEED: three baseline seeds give one value, so the noise rule
    has nothing to test with; decisions fall back to single runs and every view says why."""
    path = write_task(toy_repo, _configs(("x to 2", {"x": 2.0})), trials=2, parallel=2)
    path.write_text(path.read_text().replace("[noise]\nrepeats = 1", "[noise]"))  # the default
    rundir, trials, _ = _run(path)
    assert [t.metric for t in trials if t.commit == trials[0].commit] == [trials[0].metric] * 3
    kept = [t for t in trials if t.title == "x to 2"]
    assert kept[0].decision is Decision.KEEP and kept[0].evidence["rule"] == "min_delta"  # type: ignore[index]
    assert not [t for t in trials if t.of == kept[0].id]  # no confirmations: they would repeat too
    ledger = Ledger.open(rundir.ledger, readonly=True)
    doc = status_document(rundir, ledger)
    ledger.close()
    assert doc["decisions"]["unmeasurable"] and doc["decisions"]["rule"] == "min_delta"
    said = "NOISE CANNOT BE MEASURED: 3 runs of 1 commit(s) with different seeds gave identical metrics"
    out = subprocess.run([*ARA, "status", str(rundir.path)], capture_output=True, text=True, check=True)
    assert said in " ".join(out.stdout.split()), out.stdout
    assert said in rundir.report.read_text()
    out = subprocess.run(
        [*ARA, "rerun", str(rundir.path), kept[0].id, "--seeds", "2"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "all 3 runs gave" in out.stdout and "ARA_SEED changes nothing" in out.stdout, out.stdout


def test_a_small_real_effect_is_confirmed_and_kept(tmp_path: Path) -> None:
    task = synthetic_repo(tmp_path / "effect", ideas=5, salt=7, effect=4.0, real_at=3, decide=NOISE_RULE)
    rundir, trials, _ = _run(task)
    (real,) = [t for t in trials if "trick" in t.title and t.kind is TrialKind.HYPOTHESIS]
    assert real.decision is Decision.KEEP
    runs = real.evidence["candidate"]  # type: ignore[index]
    assert len(runs) in (2, 4, 8, 12) and real.evidence["rule"] == "noise"  # type: ignore[index]
    confirmations = [t for t in trials if t.of == real.id and t.source == "repeat"]
    assert len(runs) == 1 + len(confirmations)  # later runs of it race other candidates
    ledger = Ledger.open(rundir.ledger, readonly=True)
    doc = status_document(rundir, ledger)
    ledger.close()
    assert doc["decisions"]["rule"] == "noise" and doc["decisions"]["sigma"] > 0
    assert doc["decisions"]["margin_one_run"] is None  # no single run keeps
    assert doc["decisions"]["margin_two_runs"] > 0 and doc["incumbent"]["trial"] == real.id
    assert doc["decisions"]["looks"] == [1, 2, 4, 8, 12]
    report = rundir.report.read_text()
    assert "a race judged at 1, 2, 4, 8, 12 runs, level 0.02 over all looks" in report
    assert "run-to-run sd" in report and "two new runs must beat the best by" in report


def _ideas(*ideas: tuple[str, str]) -> str:
    """[[ideas]] that insert code into train.py after its `import math`."""
    edits = [
        {
            "title": title,
            "edits": [{"path": "train.py", "search": "import math", "replace": f"import math\n{code}"}],
        }
        for title, code in ideas
    ]
    return tomli_w.dumps({"ideas": edits})


def _configs(*ideas: tuple[str, dict[str, float]]) -> str:
    return "".join(
        f'[[ideas]]\ntitle = "{title}"\nconfig = {{ {", ".join(f"{k} = {v}" for k, v in config.items())} }}\n'
        for title, config in ideas
    )


TAMPER_IDEAS = _ideas(
    ("rewrite the evaluation", "open('evaluate.py', 'w').write('print(\"---\"); print(\"score: 99\")')"),
    (
        "write my own metrics",
        "import json, os\n"
        "trial = os.path.join(os.environ['ARA_RUN_DIR'], 'trials', os.environ['ARA_TRIAL_ID'])\n"
        "json.dump({'score': 99}, open(os.path.join(trial, 'metrics.json'), 'w'))",
    ),
    (
        "through a symlink",
        "import os\nos.symlink('evaluate.py', 'innocent.txt')\n"
        "open('innocent.txt', 'a').write('\\nprint(\"score: 99\")\\n')",
    ),
)


@pytest.mark.parametrize("sandbox", ["none", "auto"])
def test_tampering_trials_are_rejected_as_tampered(toy_repo: Path, sandbox: str) -> None:
    path = write_task(toy_repo, TAMPER_IDEAS + f'\n[sandbox]\nmode = "{sandbox}"\n', trials=4, parallel=1)
    rundir, trials, _ = _run(path)
    by = {t.title: t for t in trials}
    for title, why in [
        ("rewrite the evaluation", "frozen files changed during the command: evaluate.py"),
        ("write my own metrics", "the training wrote its own metrics file"),
        ("through a symlink", "frozen files changed during the command: evaluate.py"),
    ]:
        if title == "write my own metrics" and sandbox == "auto" and not probe():
            # In the sandbox the trial folder is not writable: the file never lands, and the
            # trial is measured by the evaluation alone (no better than its parent).
            assert by[title].decision is Decision.DISCARD and by[title].metric == by["baseline"].metric
            continue
        assert by[title].decision is Decision.REJECTED, (title, by[title].reason)
        assert by[title].reason.startswith("tampered: ") and why in by[title].reason, by[title].reason
        assert by[title].metric is None
    assert (rundir.frozen / "evaluate.py").is_file()


def test_the_evaluation_runs_from_the_pristine_copy(toy_repo: Path) -> None:
    """A worktree whose frozen file differs is caught before the job; the copy in the run directory
    is what the evaluation runs, and a tampered copy there voids the trial."""
    path = write_task(toy_repo, "", trials=2, parallel=1)
    controller = launch(load_task(path), echo=lambda m: None)
    (controller.rundir.frozen / "evaluate.py").write_text("print('---'); print('score: 99')\n")
    with pytest.raises(
        BaselineError, match=r"pristine copy of evaluate\.py does not match its recorded hash"
    ):
        controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    first = ledger.trials()[0]
    ledger.close()
    assert first.decision is Decision.REJECTED and first.reason.startswith("tampered: ")


def test_screening_promotes_the_best_and_only_full_runs_keep(toy_repo: Path) -> None:
    ideas = "".join(
        f'[[ideas]]\ntitle = "x to {x}"\nconfig = {{ x = {x} }}\n' for x in (1.0, 2.5, -1.0, 0.0, 3.0, 2.0)
    )
    path = write_task(
        toy_repo, ideas + "[fidelity]\nscreen_steps = 2\npromote = 1\nround_size = 3\n", trials=7
    )
    rundir, trials, _ = _run(path)
    screen = [t for t in trials if t.kind is TrialKind.HYPOTHESIS]
    assert all(t.fidelity == "screen" and t.steps == 2 for t in screen)
    assert "<dt>multi-fidelity</dt><dd>screened at 2 steps" in (rundir.path / "report.html").read_text()
    assert {t.round for t in screen} == {1, 2}
    promoted = [t for t in trials if t.kind is TrialKind.PROMOTE]
    assert [t.decision for t in screen].count(Decision.PROMOTED) == len(promoted) == 2
    assert {trials[[x.id for x in trials].index(p.of)].title for p in promoted} == {"x to 2.5", "x to 3.0"}  # type: ignore[arg-type]
    assert all(p.steps == 5 and p.fidelity == "full" for p in promoted)
    assert not [t for t in trials if t.decision is Decision.KEEP and t.fidelity == "screen"]
    assert [t for t in trials if t.kind is TrialKind.REPEAT and t.steps == 2]  # the baseline's screen score
    spec = read_spec(rundir.task_copy)
    saved = fidelity.savings(trials, spec.full_steps, spec.fidelity.screen_steps)
    full = [t.elapsed for t in trials if t.fidelity == "full" and t.elapsed is not None]
    dropped = [t for t in screen if t.decision is not Decision.PROMOTED]
    # a screened-out hypothesis would have cost what this run's full-budget jobs cost on average
    expected = sum(full) + len(dropped) * sum(full) / len(full)
    assert saved.full_budget_slot_hours * 3600 == pytest.approx(expected)
    assert saved.slot_hours * 3600 == pytest.approx(sum(t.elapsed or 0.0 for t in trials))
    view = history(trials)
    assert all(t.kind.is_hypothesis() for t in view)  # no re-runs or promotions: one row per idea
    assert sum(1 for t in view if t.kind.counts_against_budget()) == 7
    assert {t.decision for t in view if t.title == "x to 3.0"} == {Decision.KEEP}


@pytest.mark.parametrize("apart", [True, False], ids=["git-merge", "edits-on-conflict"])
def test_two_improvements_from_one_parent_are_combined(toy_repo: Path, apart: bool) -> None:
    # Lines far apart merge cleanly; adjacent ones conflict in git, and the other trial's own
    # search/replace edits are applied to the new incumbent instead.
    if apart:
        config = "x = 0.5\n" + "".join(f"pad{i} = {i}\n" for i in range(8)) + "y = 2.0\n"
        (toy_repo / "config.toml").write_text(config)
        commit_all(toy_repo, "spaced config")
    ideas = _configs(("x to 3", {"x": 3.0}), ("y to -1", {"y": -1.0}))
    # Three slots: both start beside the baseline, so both are built on it whatever ends first.
    path = write_task(toy_repo, ideas, trials=3, parallel=3)
    _, trials, _ = _run(path)
    by = {t.title: t for t in trials}
    assert by["x to 3"].parent_trial == by["y to -1"].parent_trial == "T0001"
    assert Decision.KEEP in (by["x to 3"].decision, by["y to -1"].decision)  # whichever ended first
    (combo,) = [t for t in trials if t.kind is TrialKind.COMBINE]
    assert combo.decision is Decision.KEEP and combo.metric == 0.0  # both gains: the optimum
    assert set(combo.hypothesis.extra["combines"]) == {by["x to 3"].id, by["y to -1"].id}


def test_a_combination_that_conflicts_is_left_to_the_planner(toy_repo: Path) -> None:
    # both change the x line: git cannot merge them
    ideas = _configs(("x to 3", {"x": 3.0}), ("x to 2, y to -1", {"x": 2.0, "y": -1.0}))
    path = write_task(toy_repo, ideas, trials=3, parallel=3)  # both built on the baseline
    rundir, trials, _ = _run(path)
    combos = [t for t in trials if t.kind is TrialKind.COMBINE]
    assert len(combos) == 1 and combos[0].decision is Decision.REJECTED
    assert combos[0].reason.startswith("merge conflicts in config.toml")
    assert "git cannot merge them" in rundir.guidance.read_text()


HOLDOUT = '''\
"""Frozen holdout: the value training saw is not the one it will be judged on."""
import json, os, tomllib
cfg = tomllib.load(open("config.toml", "rb"))
value = float(open("pred.txt").read()) - 20 * bool(cfg.get("overfit"))
json.dump({"score": value}, open(os.environ["ARA_METRICS_PATH"], "w"))
'''


def test_holdout_runs_hidden_and_a_disagreeing_keep_is_flagged(toy_repo: Path) -> None:
    (toy_repo / "holdout.py").write_text(HOLDOUT)
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\noverfit = false\n")
    commit_all(toy_repo, "holdout")
    ideas = (
        '[[ideas]]\ntitle = "honest"\nconfig = { x = 1.0 }\n'
        '[[ideas]]\ntitle = "overfit"\nconfig = { x = 2.0, overfit = true }\n'
    )
    text = TASK.format(trials=3, parallel=1).replace(
        'eval = "python evaluate.py"', 'eval = "python evaluate.py"\nholdout = "python holdout.py"'
    )
    text = text.replace('freeze = ["evaluate.py"]', 'freeze = ["evaluate.py", "holdout.py"]')
    path = write_task(toy_repo, ideas, base=text)
    rundir, trials, _ = _run(path)
    by = {t.title: t for t in trials}
    assert by["honest"].holdout == by["honest"].metric and "holdout_flag" not in (by["honest"].evidence or {})
    assert by["overfit"].decision is Decision.KEEP
    assert by["overfit"].holdout == pytest.approx(by["overfit"].metric - 20)  # type: ignore[operator]
    assert "holdout disagrees" in by["overfit"].evidence["holdout_flag"]  # type: ignore[index]
    assert "holdout disagrees" in (rundir.trial_dir(by["overfit"].id) / "report.md").read_text()
    assert all(t.holdout is None for t in history(trials))  # the planner never sees it


def test_simplicity_keeps_a_tie_that_removes_code(toy_repo: Path) -> None:
    train = (
        (toy_repo / "train.py").read_text().replace("import math\n", "import math\n# unused 1\n# unused 2\n")
    )
    (toy_repo / "train.py").write_text(train)
    commit_all(toy_repo, "dead comments")
    edit = {"path": "train.py", "search": "# unused 1\n# unused 2\n", "replace": ""}
    idea = tomli_w.dumps({"ideas": [{"title": "drop dead comments", "edits": [edit]}]})
    path = write_task(toy_repo, idea, trials=2, parallel=1)
    _, trials, _ = _run(path)
    assert trials[1].decision is Decision.KEEP and "simpler (-2 lines)" in trials[1].reason


def test_rerun_a_trial_of_a_finished_run_with_new_seeds_and_steps(toy_repo: Path) -> None:
    path = write_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n', trials=2, parallel=1)
    rundir, _, _ = _run(path)
    out = subprocess.run(
        [*ARA, "rerun", rundir.run_id, "t0002", "--steps", "7", "--seeds", "2"],
        cwd=toy_repo,
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    ledger = Ledger.open(rundir.ledger, readonly=True)
    trials, meta = ledger.trials(), ledger.meta()
    ledger.close()
    reruns = [t for t in trials if t.kind is TrialKind.RERUN]
    assert [(t.of, t.steps, t.seed, t.decision) for t in reruns] == [
        ("T0002", 7, 0, Decision.REPEAT),
        ("T0002", 7, 1, Decision.REPEAT),
    ]
    assert all(t.commit == trials[1].commit and t.metric == trials[1].metric for t in reruns)
    assert "ARA_STEPS=7" in (rundir.trial_dir(reruns[0].id) / "train.log").read_text()
    assert meta["state"] == "finished" and meta["end_reason"].startswith("trial budget spent")
    assert not list(rundir.requests.glob("*.json"))
    bad = subprocess.run(
        [*ARA, "rerun", rundir.run_id, "T0099"], cwd=toy_repo, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "no measured trial 'T0099'" in bad.stderr


def test_rerun_request_reaches_a_live_controller(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\nsleep = 0.0\n")
    commit_all(toy_repo, "sleep knob")
    ideas = _configs(("x to 2", {"x": 2.0}), ("slow", {"sleep": 4.0}))
    path = write_task(toy_repo, ideas, trials=3, parallel=1)
    proc = subprocess.Popen([*ARA, "submit", str(path)], cwd=toy_repo, stdout=subprocess.PIPE, text=True)
    try:
        run_id = ""
        while not run_id:
            line = proc.stdout.readline()  # type: ignore[union-attr]
            assert line, "ara submit ended before printing the run id"
            run_id = line.split()[-1] if line.startswith("run id: ") else ""
        rundir = toy_repo / ".ara" / "runs" / run_id
        deadline = time.time() + 60
        while not (rundir / "trials" / "T0003" / "job.json").exists():  # "slow" is running
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.1)
        out = subprocess.run(
            [*ARA, "rerun", run_id, "T0002", "--seeds", "2"], cwd=toy_repo, capture_output=True, text=True
        )
        assert out.returncode == 0 and "queued for the running controller" in out.stdout, (
            out.stdout + out.stderr
        )
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    ledger = Ledger.open(rundir / "ledger.sqlite", readonly=True)
    trials = ledger.trials()
    ledger.close()
    reruns = [t for t in trials if t.kind is TrialKind.RERUN]
    assert [(t.of, t.seed, t.decision) for t in reruns] == [
        ("T0002", 1, Decision.REPEAT),
        ("T0002", 2, Decision.REPEAT),
    ]
    assert not list((rundir / "requests").glob("*.json"))


def test_combinations_git_cannot_merge_do_not_count_toward_crash_limit(tmp_path: Path) -> None:
    from slurm_autoresearch.budget import spent
    from slurm_autoresearch.hypothesis import Hypothesis
    from slurm_autoresearch.ledger import Ledger
    from slurm_autoresearch.trials import Trials

    limit = _spec().budget  # crash_limit 5
    ledger = Ledger.open(tmp_path / "ledger.sqlite")

    def add(n: int, kind: TrialKind, start: int) -> None:
        for i in range(start, start + n):
            steps = Trials(ledger, clock=lambda i=i: float(i))
            t = steps.planned(Hypothesis(f"t{i}"), parent="abc", parent_trial=None, kind=kind)
            steps.rejected(t, "merge conflicts" if kind is TrialKind.COMBINE else "edits do not apply")

    add(6, TrialKind.COMBINE, 1)
    assert spent(limit, ledger.spending(limit.crash_limit), elapsed_s=0) == ""
    add(4, TrialKind.HYPOTHESIS, 10)
    assert spent(limit, ledger.spending(limit.crash_limit), elapsed_s=0) == ""  # four in a row
    add(1, TrialKind.HYPOTHESIS, 20)
    assert "5 trials in a row crashed or were rejected" in spent(
        limit, ledger.spending(limit.crash_limit), elapsed_s=0
    )
    ledger.close()


def test_slots_left_idle_add_incumbent_seeds_while_the_spread_has_few_dof(tmp_path: Path) -> None:
    """The batch schedule leaves slots idle while a round's last jobs run: the incumbent gets seeds
    there until the spread has `[noise] dof`, beside the round, and never past it."""
    task = synthetic_repo(tmp_path / "batch", ideas=6, salt=5, decide="[noise]\nrepeats = 2\ndof = 5\n")
    task.write_text(task.read_text().replace("[run]\n", '[run]\nschedule = "batch"\n'))
    train = task.parent / "train.py"  # idea 1 is slow: its round's other slot idles meanwhile
    train.write_text(train.read_text() + 'import time\ntime.sleep(2.0 if cfg.get("k1") else 0.0)\n')
    commit_all(task.parent, "batch schedule, a slow idea")
    _, trials, lines = _run(task)
    filled = [t for t in trials if t.source == "noise"]
    assert filled and all(t.of == "T0001" and t.kind is TrialKind.REPEAT for t in filled), lines
    assert all(t.hypothesis.rationale.startswith("noise estimate: dof ") for t in filled)
    assert any("in free slots" in line for line in lines)
    assert all(t.state is TrialState.DONE and t.decision for t in trials)
    runs_before = [t for t in trials if t.commit == trials[0].commit and t.seq < filled[-1].seq]
    assert len(runs_before) - 1 < 5 + 1  # it stopped adding once the dof reached 5
