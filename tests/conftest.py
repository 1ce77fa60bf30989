"""Shared fixtures: a real git repo with a tiny training task (no torch), and task files."""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path
from typing import NoReturn

import pytest

TRAIN = '''\
"""Toy training: the score peaks at x = 3, y = -1; knobs let tests break it on purpose."""
import math
import os
import time
import tomllib

cfg = tomllib.load(open("config.toml", "rb"))
steps = int(os.environ.get("ARA_STEPS", "10"))
print(f"step 0/{steps} loss 1.0", flush=True)
time.sleep(cfg.get("sleep", 0.0))
if cfg.get("crash", False):
    raise RuntimeError("boom from train.py")
hog = bytearray(int(cfg.get("hog_mb", 0)) * 2**20)
for i in range(0, len(hog), 4096):
    hog[i] = 1  # touch every page: resident, as a real model would be
time.sleep(cfg.get("hog_seconds", 0.0))
value = -(cfg["x"] - 3) ** 2 - (cfg["y"] + 1) ** 2
if cfg.get("nan", False):
    value = math.nan
    print("step 5 loss nan", flush=True)
    time.sleep(cfg.get("after_sleep", 0.0))
with open("pred.txt", "w") as fh:
    fh.write(repr(value))
print(f"step {steps}/{steps} loss 0.5", flush=True)
'''

EVALUATE = '''\
"""Frozen evaluation: reads pred.txt and reports the score as JSON and as a --- block."""
import json
import os
import sys

try:
    value = float(open("pred.txt").read())
except FileNotFoundError:
    print("no predictions", file=sys.stderr)
    sys.exit(1)
if os.environ.get("ARA_METRICS_PATH"):
    with open(os.environ["ARA_METRICS_PATH"], "w") as fh:
        json.dump({"score": value, "steps": int(os.environ.get("ARA_STEPS", "0"))}, fh)
print("---")
print(f"score: {value}")
'''

CONFIG = "x = 0.5  # the x knob\ny = 2.0\n"

TASK = """\
[task]
name = "toy"
description = "Maximize a quadratic."
command = "python train.py"
eval = "python evaluate.py"

[metric]
name = "score"
goal = "max"

[budget]
steps = 5
trials = {trials}

[run]
executor = "local"
planner = "offline"
summarizer = "rules"
parallel = {parallel}
poll_seconds = 0.05

[surface]
allow = ["train.py", "config.toml", "src/**"]
freeze = ["evaluate.py"]

[search]
config = "config.toml"
startup_trials = 3

[search.space]
x = {{ low = -5.0, high = 5.0 }}
y = {{ low = -5.0, high = 5.0 }}

[noise]
repeats = 1  # single runs: tests of other things count jobs; test_decisions tests the default

[tracking]
wandb = "off"  # no W&B summary process after every toy run; test_tracking turns it on
"""


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def commit_all(repo: Path, message: str = "update") -> str:
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message)
    return git(repo, "rev-parse", "HEAD").strip()


@pytest.fixture
def toy_repo(tmp_path: Path) -> Path:
    """A committed repo: train.py, evaluate.py (frozen), config.toml and task.toml."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q", "-b", "main")
    (repo / "train.py").write_text(TRAIN)
    (repo / "evaluate.py").write_text(EVALUATE)
    (repo / "config.toml").write_text(CONFIG)
    (repo / "task.toml").write_text(TASK.format(trials=6, parallel=2))
    (repo / "README.md").write_text("toy\n")
    commit_all(repo, "toy task")
    return repo


def write_task(
    repo: Path,
    extra: str = "",
    *,
    trials: int = 6,
    parallel: int = 2,
    name: str = "task.toml",
    base: str | None = None,
) -> Path:
    """task.toml plus extra TOML appended (ideas, overrides in new tables)."""
    path = repo / name
    path.write_text((base or TASK.format(trials=trials, parallel=parallel)) + textwrap.dedent(extra))
    return path


def repo_state(repo: Path) -> tuple[str, str, str, str]:
    """What ara must never change: HEAD, the checked-out branch, the index and the working tree."""
    return (
        git(repo, "rev-parse", "HEAD"),
        git(repo, "symbolic-ref", "HEAD"),
        git(repo, "ls-files", "--stage"),
        git(repo, "status", "--porcelain", "--untracked-files=all"),
    )


def slurm_answers() -> bool:
    """A Slurm cluster with an idle-capable node answers here (scripts/slurm start makes one)."""
    import shutil

    if not shutil.which("sinfo"):
        return False
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and any(s in out.stdout for s in ("idle", "mixed", "allocated"))


def unavailable(why: str) -> NoReturn:
    """A test needs what this machine lacks (Slurm, bubblewrap, root, torch): it skips on a laptop,
    and fails under ARA_REQUIRE_SLURM=1 (CI, where scripts/test installs all of it)."""
    if os.environ.get("ARA_REQUIRE_SLURM") == "1":
        pytest.fail(f"ARA_REQUIRE_SLURM=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """Slurm tests run against the real cluster; ARA_REQUIRE_SLURM=1 turns its absence into a failure."""
    if not slurm_answers():
        unavailable("no Slurm cluster answers: `scripts/slurm start` (as root) makes one")


@pytest.fixture
def bwrap_works() -> None:
    """Sandbox tests need a bubblewrap that makes rooms here."""
    from slurm_autoresearch.executors.sandbox import probe

    if probe():
        unavailable(f"no working bubblewrap here: {probe()}")


def _fake_module():  # type: ignore[no-untyped-def]
    """scripts/fake_claude.py, loaded by path: scripts are not part of the package."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "scripts" / "fake_claude.py"
    if "fake_claude" not in sys.modules:
        spec = importlib.util.spec_from_file_location("fake_claude", path)
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        sys.modules["fake_claude"] = module
        spec.loader.exec_module(module)
    return sys.modules["fake_claude"]


API_KEY = "sk-ant-test-0123456789abcdefSECRET"


@pytest.fixture
def fake_claude(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    """A fake Messages API on loopback; the real anthropic SDK reaches it through ANTHROPIC_BASE_URL."""
    fake = _fake_module().FakeClaude().start()
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", API_KEY)
    try:
        yield fake
    finally:
        fake.stop()


def claude_task(
    repo: Path,
    extra: str = "",
    *,
    trials: int = 4,
    parallel: int = 1,
    summarizer: str = "anthropic",
    models: str = "",
) -> Path:
    path = write_task(repo, extra, trials=trials, parallel=parallel)
    text = path.read_text().replace('planner = "offline"', 'planner = "anthropic"')
    text = text.replace('summarizer = "rules"', f'summarizer = "{summarizer}"')
    text += "\n[models]\nmax_retries = 2\ntimeout_s = 20\n" + models
    path.write_text(text)
    return path


def invoke(args: list[str], cwd: Path) -> tuple[int, str]:
    """`ara ARGS` in cwd through click's runner: its exit code and output (stderr included)."""
    from click.testing import CliRunner

    from slurm_autoresearch.cli import main

    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, args, catch_exceptions=False)
    finally:
        os.chdir(old)
    return result.exit_code, result.output
