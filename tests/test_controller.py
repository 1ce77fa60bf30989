"""The whole loop on a toy task with real git, SQLite, subprocesses and the offline planner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from slurm_autoresearch.errors import BaselineError
from slurm_autoresearch.executors.local import LocalExecutor
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.planners.offline import OfflinePlanner
from slurm_autoresearch.rundir import RunDir
from slurm_autoresearch.spec import TaskSpec
from slurm_autoresearch.trial import Decision, TrialKind
from slurm_autoresearch.views.status import status_document

from .conftest import commit_all, git, repo_state, write_task


def _run(task_path: Path, **kwargs: object) -> tuple[RunDir, Ledger, list[str]]:
    lines: list[str] = []
    controller = launch(load_task(task_path), echo=lines.append, **kwargs)  # type: ignore[arg-type]
    rundir = controller.rundir
    try:
        controller.run()
    finally:
        ledger = Ledger.open(rundir.ledger, readonly=True)
    return rundir, ledger, lines


def test_full_run_keeps_improvements_and_reports(toy_repo: Path) -> None:
    path = write_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n', trials=7)
    before = repo_state(toy_repo)
    rundir, ledger, lines = _run(path)
    trials = ledger.trials()
    assert len(trials) == 7
    assert trials[0].title == "baseline" and trials[0].decision is Decision.KEEP
    assert trials[1].title == "x to 2" and trials[1].decision is Decision.KEEP  # -4.25 beats -9.25
    kept = [t for t in trials if t.decision is Decision.KEEP]
    best = max(kept, key=lambda t: t.decided_at or 0)
    assert best.metric == max(t.metric for t in trials if t.metric is not None)
    assert git(toy_repo, "rev-parse", f"ara/{rundir.run_id}/best").strip() == best.commit
    for t in trials:
        assert git(toy_repo, "rev-parse", f"refs/ara/{rundir.run_id}/{t.id}").strip() == t.commit
        for name in ("hypothesis.json", "job.json", "outcome.json", "patch.diff", "report.md", "train.log"):
            assert (rundir.trial_dir(t.id) / name).is_file(), (t.id, name)
    assert not list(rundir.worktrees.glob("T*"))  # removed after each decision
    assert "ara/" + rundir.run_id + "/T0002" not in git(toy_repo, "branch", "--list")
    results = rundir.results.read_text().splitlines()
    assert len(results) == 8 and results[0].startswith("trial\tcommit\tparent\tscore")
    assert rundir.report.is_file() and rundir.progress.stat().st_size > 10_000
    doc = status_document(rundir, ledger)
    assert doc["run"]["state"] == "finished"
    assert doc["incumbent"]["trial"] == best.id
    extra = {"repeats": 0, "promotions": 0, "reruns": 0, "combinations": 0}  # rows outside the budget
    assert doc["budget"]["trials"] == {"used": 7, "limit": 7, **extra}
    assert [t["id"] for t in doc["trials"]] == [t.id for t in trials]
    json.dumps(doc)
    assert rundir.lock_holder() is None
    assert repo_state(toy_repo) == before
    assert any("trial budget spent (7/7)" in line for line in lines)
    ledger.close()


def test_slots_stay_full_without_waiting_for_a_batch(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\nsleep = 0.0\n")
    commit_all(toy_repo, "sleep knob")
    path = write_task(
        toy_repo,
        """
        [[ideas]]
        title = "slow"
        config = { sleep = 3.0 }
        [[ideas]]
        title = "fast 1"
        config = { x = 1.0 }
        [[ideas]]
        title = "fast 2"
        config = { x = 1.5 }
        [[ideas]]
        title = "fast 3"
        config = { x = 2.5 }
    """,
        trials=5,
    )
    _, ledger, _ = _run(path)
    by_title = {t.title: t for t in ledger.trials()}
    slow = by_title["slow"]
    # While "slow" held one slot, the other slot went through several trials one after another.
    assert by_title["fast 2"].submitted_at < slow.finished_at  # type: ignore[operator]
    assert by_title["fast 3"].submitted_at < slow.finished_at  # type: ignore[operator]
    ledger.close()


def _run_hostile_backlog(path: Path) -> tuple[RunDir, Ledger, list[str]]:
    """`ara submit` refuses a backlog like this one (test_task), so these ideas reach the run as a
    model's would: from the planner, after the task (without them) was validated."""
    text = path.read_text()
    ideas = text[text.index("[[ideas]]") :]
    path.write_text(text[: text.index("[[ideas]]")])
    planner = OfflinePlanner(TaskSpec.model_validate(tomllib.loads(path.read_text() + ideas)))
    return _run(path, planner=planner)


def test_hostile_backlog_is_rejected_and_recorded(toy_repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, toy_repo / "src")
    commit_all(toy_repo, "symlinked src")
    path = write_task(
        toy_repo,
        f'''
        [[ideas]]
        title = "frozen"
        edits = [{{ path = "evaluate.py", search = "import json", replace = "import json  # x" }}]
        [[ideas]]
        title = "dotdot"
        edits = [{{ path = "../x.py", search = "", replace = "boom" }}]
        [[ideas]]
        title = "absolute"
        edits = [{{ path = "{tmp_path}/abs.py", search = "", replace = "boom" }}]
        [[ideas]]
        title = "symlink"
        edits = [{{ path = "src/evil.py", search = "", replace = "boom" }}]
        [[ideas]]
        title = "git config"
        edits = [{{ path = ".git/config", search = "", replace = "[core]" }}]
    ''',
        trials=6,
        parallel=1,
    )
    path.write_text(path.read_text().replace("trials = 6", "trials = 6\ncrash_limit = 10"))
    before = repo_state(toy_repo)
    rundir, ledger, _ = _run_hostile_backlog(path)
    reasons = {t.title: t.reason for t in ledger.trials() if t.decision is Decision.REJECTED}
    assert "evaluate.py is frozen" in reasons["frozen"]
    assert "climbs out with '..'" in reasons["dotdot"]
    assert "absolute path" in reasons["absolute"]
    assert "symlink" in reasons["symlink"]
    assert "points into .git" in reasons["git config"]
    assert not list(outside.iterdir()) and not (tmp_path / "abs.py").exists()
    assert not (toy_repo.parent / "x.py").exists()
    assert repo_state(toy_repo) == before
    assert "rejected" in (rundir.trial_dir("T0002") / "report.md").read_text()
    ledger.close()


def test_crashing_and_tampering_trials_are_data(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\ncrash = false\nnan = false\n")
    commit_all(toy_repo, "knobs")
    path = write_task(
        toy_repo,
        """
        [[ideas]]
        title = "crash"
        config = { crash = true }
        [[ideas]]
        title = "nan"
        config = { nan = true }
        [[ideas]]
        title = "tamper"
        [[ideas.edits]]
        path = "train.py"
        search = "import math"
        replace = "import math\\nopen('evaluate.py', 'a').write('#')"
    """,
        trials=4,
        parallel=1,
    )
    _, ledger, _ = _run(path)
    trials = {t.title: t for t in ledger.trials()}
    assert trials["crash"].decision is Decision.CRASH
    assert "RuntimeError: boom from train.py" in trials["crash"].reason
    assert trials["nan"].decision is Decision.CRASH and trials["nan"].metric is None
    assert trials["tamper"].decision is Decision.REJECTED
    assert "tampered: frozen files changed during the command: evaluate.py" in trials["tamper"].reason
    ledger.close()


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ("x = 0.5\ny = 2.0\ncrash = true\n", "RuntimeError: boom from train.py"),
        ("x = 0.5\ny = 2.0\nnan = true\n", "no finite metric 'score'"),
    ],
)
def test_broken_baseline_stops_the_run_naming_the_log(toy_repo: Path, config: str, expected: str) -> None:
    (toy_repo / "config.toml").write_text(config)
    commit_all(toy_repo, "broken")
    task = load_task(write_task(toy_repo))
    controller = launch(task, echo=lambda _: None)
    with pytest.raises(BaselineError) as info:
        controller.run()
    message = str(info.value)
    # A NaN baseline may also be cancelled early by the monitor: either way the log is named.
    assert expected in message or "loss is NaN" in message
    assert str(controller.rundir.trial_dir("T0001") / "train.log") in message
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    assert ledger.meta()["state"] == "failed"
    # A hypothesis started beside the baseline in the free slot ended with it: crashed on the
    # same broken code, or cancelled when the baseline failed; none is left running.
    beside = ledger.trials()[1:]
    assert all(t.kind is TrialKind.HYPOTHESIS and not t.state.is_live() for t in beside)
    ledger.close()


def test_stop_cancel_ends_the_run_and_records_cancelled_trials(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 0.0\n")
    commit_all(toy_repo, "sleep knob")
    path = write_task(
        toy_repo, '[[ideas]]\ntitle = "slow"\nconfig = { sleep = 60.0 }\n', trials=10, parallel=1
    )
    task = load_task(path)
    calls = {"n": 0}
    controller = None

    def sleep(seconds: float) -> None:
        import time

        calls["n"] += 1
        assert controller is not None
        trial = controller.ledger.trial("T0002")
        if trial is not None and trial.state.value == "running":
            controller.rundir.request_stop(cancel=True)
        time.sleep(min(seconds, 0.05))

    controller = launch(task, echo=lambda _: None, sleep=sleep)
    summary = controller.run()
    assert summary.state == "stopped"
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    slow = ledger.trial("T0002")
    # Cancelled by the user, not by its own fault: planned again for `ara resume`, not a crash.
    assert slow is not None and slow.decision is None and slow.state.value == "planned", slow
    assert "cancelled by `ara stop --cancel`" in slow.reason
    assert len(ledger.trials()) == 2
    assert ledger.meta()["state"] == "stopped"
    assert ledger.meta()["end_reason"].startswith("stopped by `ara stop` --cancel")
    ledger.close()


def test_crash_limit_stops_a_hopeless_run(toy_repo: Path) -> None:
    path = write_task(
        toy_repo,
        "".join(
            f'[[ideas]]\ntitle = "bad {i}"\n'
            '[[ideas.edits]]\npath = "evaluate.py"\nsearch = "json"\nreplace = "x"\n'
            for i in range(5)
        ),
        trials=10,
        parallel=1,
    )
    path.write_text(path.read_text().replace("trials = 10", "trials = 10\ncrash_limit = 3"))
    _, ledger, _ = _run_hostile_backlog(path)
    assert len(ledger.trials()) == 4  # baseline + 3 rejections
    assert ledger.meta()["state"] == "stopped"
    assert "3 trials in a row" in ledger.meta()["end_reason"]
    ledger.close()


def test_injected_executor_is_used(toy_repo: Path) -> None:
    executor = LocalExecutor(capacity=1)
    _, ledger, _ = _run(write_task(toy_repo, trials=2, parallel=2), executor=executor)
    assert ledger.meta()["parallel"] == 1 and ledger.meta()["executor"] == "local"
    ledger.close()


def test_stop_cancel_during_the_baseline_then_resume_finishes_the_run(toy_repo: Path) -> None:
    """Issue 14: `ara stop --cancel` while the baseline ran, then `ara resume`, failed a healthy
    run ("baseline produced no metric (cancelled)"). The baseline runs again and the run finishes."""
    from slurm_autoresearch.loop.launcher import open_run

    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 1.5\n")
    commit_all(toy_repo, "slow baseline")
    task = load_task(write_task(toy_repo, trials=3, parallel=1))
    controller = None

    def sleep(seconds: float) -> None:
        import time

        assert controller is not None
        baseline = controller.ledger.trial("T0001")
        if baseline is not None and baseline.state.value == "running":
            controller.rundir.request_stop(cancel=True)
        time.sleep(min(seconds, 0.05))

    controller = launch(task, echo=lambda _: None, sleep=sleep)
    summary = controller.run()
    assert summary.state == "stopped" and summary.trials == 1
    resumed = open_run(controller.rundir, echo=lambda _: None).run()
    assert resumed.state == "finished", resumed.reason
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    trials = ledger.trials()
    ledger.close()
    assert trials[0].decision is Decision.KEEP and trials[0].metric is not None
    assert len([t for t in trials if t.kind.is_hypothesis()]) == 3


def test_the_controller_never_loads_torch_wandb_or_matplotlib(toy_repo: Path) -> None:
    """A login-node process: heavy libraries load only in the trials and in helper processes."""
    path = write_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n', trials=3)
    script = (
        "import sys\n"
        "from slurm_autoresearch.loop.launcher import launch\n"
        "from slurm_autoresearch.loop.preflight import load_task\n"
        f"launch(load_task({str(path)!r}), echo=lambda _: None).run()\n"
        "print(sorted(m for m in ('torch', 'wandb', 'matplotlib', 'anthropic') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]", out.stdout
    (run,) = (toy_repo / ".ara" / "runs").iterdir()
    assert (run / "progress.png").stat().st_size > 10_000  # drawn by a child process


def test_repeated_timeouts_say_trial_minutes_looks_too_low(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\nsleep = 0.0\n")
    commit_all(toy_repo, "sleep knob")
    ideas = "".join(
        f'[[ideas]]\ntitle = "slow {i}"\nconfig = {{ sleep = 30.0, x = {i}.0 }}\n' for i in (1, 2)
    )
    path = write_task(toy_repo, ideas, trials=3, parallel=2)
    path.write_text(path.read_text().replace("\ntrials = 3\n", "\ntrials = 3\ntrial_minutes = 0.05\n"))
    rundir, ledger, _ = _run(path)
    assert [t.job_state for t in ledger.trials()] == ["completed", "timeout", "timeout"]
    doc = status_document(rundir, ledger)
    ledger.close()
    (hint,) = doc["hints"]
    assert hint.startswith(
        "2 trials hit the 0.05-minute limit ([budget] trial_minutes); finished trials took"
    )
    assert "trial_minutes looks too low" in hint
    assert "trial_minutes looks too low" in " ".join(rundir.report.read_text().split())
    out = subprocess.run(
        [sys.executable, "-m", "slurm_autoresearch.cli", "status", str(rundir.path)],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "hint: 2 trials hit the 0.05-minute limit" in " ".join(out.stdout.split())
