"""The CLI end to end, through the real console entry point's click group."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm_autoresearch.cli import main
from slurm_autoresearch.loop.preflight import load_task

from .conftest import commit_all, git, invoke, write_task

README = Path(__file__).resolve().parents[1] / "README.md"


_invoke = invoke


def test_every_command_has_help_and_is_in_the_readme() -> None:
    readme = README.read_text()
    assert main.commands, "no commands registered"
    for name, command in main.commands.items():
        if command.hidden:  # internal halves of documented commands
            continue
        assert command.help and len(command.help.strip()) > 20, name
        code, output = _invoke([name, "--help"], Path.cwd())
        assert code == 0 and "Usage:" in output
        assert re.search(rf"`ara {name}\b", readme), f"`ara {name}` is missing from the README"


def test_console_script_runs() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "slurm_autoresearch.cli", "--help"], capture_output=True, text=True, check=True
    ).stdout
    assert "submit" in out and "status" in out


def test_submit_status_show_report_stop(toy_repo: Path) -> None:
    path = write_task(toy_repo, trials=3)
    code, output = _invoke(["submit", str(path)], toy_repo)
    assert code == 0, output
    run_id = re.search(r"run id: (\S+)", output).group(1)  # type: ignore[union-attr]

    code, output = _invoke(["status", "--json"], toy_repo)  # no RUN: the latest run
    assert code == 0
    doc = json.loads(output)
    assert doc["schema"] == 1 and doc["run"]["id"] == run_id and doc["run"]["state"] == "finished"
    assert set(doc) == {
        "schema",
        "run",
        "metric",
        "budget",
        "incumbent",
        "baseline",
        "decisions",
        "fidelity",
        "counts",
        "hints",
        "transfer",
        "trials",
    }
    assert doc["decisions"]["rule"] == "min_delta" and doc["fidelity"] is None and doc["hints"] == []
    assert doc["transfer"] is None  # no [validate] check asked for
    assert set(doc["trials"][0]) >= {
        "id",
        "state",
        "decision",
        "metric",
        "parent",
        "commit",
        "job_id",
        "elapsed",
        "title",
    }

    code, output = _invoke(["status", run_id], toy_repo)
    assert code == 0 and run_id in output and "T0003" in output and "baseline" in output

    code, output = _invoke(["show", run_id, "T0002"], toy_repo)
    assert code == 0 and output.startswith("# T0002:") and "## Diff" in output and "## Log tail" in output

    code, output = _invoke(["show", run_id, "T0099"], toy_repo)
    assert code == 2 and "has no trial 'T0099'" in output

    report = toy_repo / ".ara" / "runs" / run_id / "report.md"
    report.unlink()
    code, output = _invoke(["report", run_id], toy_repo)
    assert code == 0 and report.is_file() and "| [T0003]" in report.read_text()

    code, output = _invoke(["stop", run_id], toy_repo)
    assert code == 0 and "is not running (finished)" in output

    code, output = _invoke(["status", "--root", str(toy_repo / ".ara"), run_id, "--json"], Path("/"))
    assert code == 0 and json.loads(output)["run"]["id"] == run_id

    # The run root is ignored inside the user's repo.
    assert git(toy_repo, "status", "--porcelain", "--", ".ara") == ""


def test_unknown_run_is_a_usage_error(toy_repo: Path) -> None:
    code, output = _invoke(["status", "nope"], toy_repo)
    assert code == 2 and "no run 'nope'" in output


def test_baseline_failure_exits_1_with_the_log(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\ncrash = true\n")
    commit_all(toy_repo, "crash")
    code, output = _invoke(["submit", str(write_task(toy_repo))], toy_repo)
    assert code == 1
    error = output.strip().splitlines()[-1]
    assert error.startswith("ara: error: baseline T0001 produced no metric") and "train.log" in error
    assert git(toy_repo, "branch", "--list", "ara/*") == ""  # nothing kept: no best branch


def test_init_writes_a_task_that_validates(tmp_path: Path) -> None:
    repo = tmp_path / "proj"
    repo.mkdir()
    git(repo, "init", "-q")
    (repo / "train.py").write_text("print('---'); print('val_loss: 1.0')\n")
    (repo / "evaluate.py").write_text("print('---'); print('val_loss: 1.0')\n")
    (repo / "config.toml").write_text("lr = 0.1\n")
    code, output = _invoke(["init", str(repo)], tmp_path)
    assert code == 0, output
    assert (repo / "task.toml").is_file() and (repo / "playbook.md").is_file()
    commit_all(repo, "init")
    task = load_task(repo / "task.toml")
    assert task.spec.task.eval == "python evaluate.py"
    assert [g.pattern for g in task.surface.allow] == ["train.py", "config.toml"]
    assert [g.pattern for g in task.surface.freeze] == ["evaluate.py"]
    code, output = _invoke(["init", str(repo)], tmp_path)
    assert code == 2 and "exists" in output


@pytest.mark.parametrize("args", [["show"], ["submit"], ["bogus"]])
def test_usage_errors_exit_2(args: list[str]) -> None:
    code, _ = _invoke(args, Path.cwd())
    assert code == 2


def _ara(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "ara"), *args], cwd=cwd, capture_output=True, text=True
    )


def _wait_until_running(repo: Path, title: str) -> dict:
    deadline = time.time() + 60
    while time.time() < deadline:
        out = _ara("status", "--json", cwd=repo)
        if out.returncode == 0:
            doc = json.loads(out.stdout)
            if any(t["title"] == title and t["state"] == "running" for t in doc["trials"]):
                return doc
        time.sleep(0.2)
    raise AssertionError(f"{title} never ran")


def test_sigterm_leaves_jobs_running_and_resume_collects_them(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 0.0\n")
    commit_all(toy_repo, "sleep knob")
    idea = '[[ideas]]\ntitle = "slow"\nconfig = { sleep = 6.0, x = 1.0 }\n'
    path = write_task(toy_repo, idea, trials=4, parallel=1)
    ara = Path(sys.executable).parent / "ara"
    proc = subprocess.Popen(
        [str(ara), "submit", str(path)],
        cwd=toy_repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    doc = _wait_until_running(toy_repo, "slow")
    slow = next(t for t in doc["trials"] if t["title"] == "slow")
    pid = int(slow["job_id"].split(":")[1])
    proc.send_signal(signal.SIGTERM)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    doc = json.loads(_ara("status", "--json", cwd=toy_repo).stdout)
    assert doc["run"]["state"] == "interrupted"
    assert next(t for t in doc["trials"] if t["title"] == "slow")["state"] == "running"
    os.kill(pid, 0)  # the job goes on without its controller
    resumed = _ara("resume", doc["run"]["id"], cwd=toy_repo)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "1 jobs re-attached" in resumed.stdout
    doc = json.loads(_ara("status", "--json", cwd=toy_repo).stdout)
    assert doc["run"]["state"] == "finished" and len(doc["trials"]) == 4
    slow = next(t for t in doc["trials"] if t["title"] == "slow")
    assert slow["job_state"] == "completed" and slow["decision"] in ("keep", "discard")
    assert _ara("resume", doc["run"]["id"], cwd=toy_repo).stdout.strip().endswith("nothing to resume")
    assert not _processes_under(toy_repo / ".ara")


def test_first_ctrl_c_drains_and_a_stopped_run_resumes_to_the_same_count(toy_repo: Path) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nsleep = 0.0\n")
    commit_all(toy_repo, "sleep knob")
    idea = '[[ideas]]\ntitle = "slow"\nconfig = { sleep = 3.0, x = 1.0 }\n'
    path = write_task(toy_repo, idea, trials=5, parallel=1)
    ara = Path(sys.executable).parent / "ara"
    proc = subprocess.Popen(
        [str(ara), "submit", str(path)],
        cwd=toy_repo,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    _wait_until_running(toy_repo, "slow")
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, output
    doc = json.loads(_ara("status", "--json", cwd=toy_repo).stdout)
    assert doc["run"]["state"] == "stopped" and len(doc["trials"]) == 2  # the slow one finished, no more
    assert doc["run"]["reason"] == "stopped by Ctrl-C"  # not "by `ara stop`": the reason says what happened
    assert next(t for t in doc["trials"] if t["title"] == "slow")["job_state"] == "completed"
    assert _ara("resume", doc["run"]["id"], cwd=toy_repo).returncode == 0
    doc = json.loads(_ara("status", "--json", cwd=toy_repo).stdout)
    assert doc["run"]["state"] == "finished" and len(doc["trials"]) == 5  # as an uninterrupted run


def _processes_under(root: Path) -> list[int]:
    """Pids whose working directory lies under root (the trials' worktrees)."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cwd = os.readlink(proc / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(root.resolve())):
                found.append(int(proc.name))
    return found


def test_guide_queues_text_for_the_next_round(toy_repo: Path) -> None:
    path = write_task(toy_repo, trials=2)
    code, output = _invoke(["submit", str(path)], toy_repo)
    run_id = re.search(r"run id: (\S+)", output).group(1)  # type: ignore[union-attr]
    code, output = _invoke(["guide", run_id, "try   larger x values"], toy_repo)
    assert code == 0 and "queued for the next planning round" in output
    guidance = (toy_repo / ".ara" / "runs" / run_id / "guidance.md").read_text()
    assert guidance.rstrip().endswith("try larger x values")
    code, output = _invoke(["guide", run_id, "  "], toy_repo)
    assert code == 2 and "guidance text is empty" in output


def _wait_for_state(repo: Path, run_id: str, states: tuple[str, ...], timeout: float = 120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        out = _ara("status", "--json", run_id, cwd=repo)
        if out.returncode == 0 and json.loads(out.stdout)["run"]["state"] in states:
            return json.loads(out.stdout)
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not reach {states}")


def test_submit_detach_returns_at_once_and_the_run_finishes(toy_repo: Path) -> None:
    path = write_task(toy_repo, trials=3)
    start = time.time()
    out = _ara("submit", "--detach", str(path), cwd=toy_repo)
    assert out.returncode == 0, out.stderr
    assert time.time() - start < 15
    run_id = re.search(r"run id: (\S+)", out.stdout).group(1)  # type: ignore[union-attr]
    assert "controller: pid" in out.stdout and f"ara status {run_id}" in out.stdout
    doc = _wait_for_state(toy_repo, run_id, ("finished",))
    assert len(doc["trials"]) == 3
    assert (toy_repo / ".ara" / "runs" / run_id / "controller.out").read_text().count("submitted") >= 3


def test_check_warns_when_local_trials_would_share_cores(toy_repo: Path) -> None:
    cores = os.cpu_count() or 1
    path = write_task(toy_repo, "[resources]\ncpus_per_trial = 2\n", parallel=cores)
    out = _ara("submit", "--check", str(path), cwd=toy_repo)
    assert out.returncode == 0
    assert f"parallel {cores} x [resources] cpus_per_trial 2 > {cores} cores" in out.stderr, out.stderr


def test_check_catches_a_misspelt_script(toy_repo: Path) -> None:
    path = write_task(toy_repo)
    path.write_text(path.read_text().replace('command = "python train.py"', 'command = "python trian.py"'))
    out = _ara("submit", "--check", str(path), cwd=toy_repo)
    assert out.returncode == 2 and "would run 'trian.py', which is not in" in out.stderr, out.stderr
    assert out.stderr.count("\n") <= 2


def test_clean_removes_a_finished_runs_worktrees_and_refs_and_keeps_its_record(
    toy_repo: Path, tmp_path: Path
) -> None:
    from slurm_autoresearch.rundir import RunDir

    from .conftest import repo_state

    path = write_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n', trials=2, parallel=1)
    code, output = _invoke(["submit", str(path)], toy_repo)
    assert code == 0, output
    run_id = re.search(r"run id: (\S+)", output).group(1)  # type: ignore[union-attr]
    rundir = RunDir(toy_repo / ".ara" / "runs" / run_id)

    def refs() -> list[str]:
        return git(
            toy_repo,
            "for-each-ref",
            "--format=%(refname)",
            f"refs/heads/ara/{run_id}/",
            f"refs/ara/{run_id}/",
        ).split()  # refs/ara/... sort before refs/heads/...

    best = f"refs/heads/ara/{run_id}/best"
    assert refs() == [f"refs/ara/{run_id}/T0001", f"refs/ara/{run_id}/T0002", best]
    # A worktree a dead controller left, and the best branch checked out in the user's own worktree.
    leftover = rundir.worktrees / "T0009"
    git(toy_repo, "worktree", "add", "-q", "-b", f"ara/{run_id}/T0009", str(leftover), "HEAD")
    mine = tmp_path / "mine"
    git(toy_repo, "worktree", "add", "-q", str(mine), f"ara/{run_id}/best")
    before = repo_state(toy_repo)
    record = sorted(p.relative_to(rundir.path) for p in rundir.path.rglob("*") if "worktrees" not in p.parts)

    rundir.acquire()  # a live controller (this process): refused
    try:
        code, output = _invoke(["clean", run_id, "--yes"], toy_repo)
    finally:
        rundir.release()
    assert code == 2 and "held by controller pid" in output
    code, output = _invoke(["clean", run_id, "--dry-run"], toy_repo)
    assert code == 0 and "would remove 1 worktrees and 3 refs" in output, output
    assert f"kept     {best} (checked out in {mine.resolve()})" in output
    asked = subprocess.run(
        [str(Path(sys.executable).parent / "ara"), "clean", run_id], cwd=toy_repo, input="n\n", text=True,
        capture_output=True,
    )  # fmt: skip
    assert asked.returncode == 1 and "Aborted" in asked.stderr
    assert len(refs()) == 4 and leftover.is_dir()  # neither the dry run nor a "no" removed anything

    code, output = _invoke(["clean", run_id, "--yes"], toy_repo)
    assert code == 0 and "removed 1 worktrees and 3 refs" in output, output
    assert refs() == [best] and not leftover.exists()
    assert str(leftover) not in git(toy_repo, "worktree", "list")
    assert repo_state(toy_repo) == before  # the user's HEAD, branch, index and tree
    assert (
        sorted(p.relative_to(rundir.path) for p in rundir.path.rglob("*") if "worktrees" not in p.parts)
        == record
    )
    code, output = _invoke(["status", run_id, "--json"], toy_repo)
    assert code == 0 and len(json.loads(output)["trials"]) == 2

    git(toy_repo, "worktree", "remove", str(mine))
    code, output = _invoke(["clean", run_id, "--yes", "--keep-best"], toy_repo)
    assert code == 0 and "nothing to clean" in output and refs() == [best]
    code, output = _invoke(["clean", run_id, "--yes"], toy_repo)
    assert code == 0 and refs() == []
