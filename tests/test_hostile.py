"""The hostile suite: 39 attacks by trial code and hypotheses, run by an unprivileged user, with
the API key in the controller's environment, on the local executor and on Slurm.

After the run: no metric is forged, no secret is in any file or reachable environment, nothing
outside the worktrees changed, no process of the user is left, and innocent trials between the
attacks get exactly their value.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import sqlite3
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests import hostile
from tests.conftest import unavailable

USER = "ara-attacker"
ALPHABET = "123456789abcde"  # the answer key never holds "0" (the honest guess) nor "f"
INNOCENT_EVERY = 8


@dataclass(frozen=True)
class Attacker:
    name: str
    home: Path
    uid: int


def _as_user(cmd: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return subprocess.run([runuser, "-u", USER, "--", *cmd], capture_output=True, text=True, **kw)  # type: ignore[call-overload]


@pytest.fixture(scope="session")
def attacker() -> Attacker:
    """An unprivileged user who runs ara (CI runs as root; researchers do not)."""
    if os.geteuid() != 0:
        unavailable("the hostile suite creates an unprivileged user: run the tests as root (CI does)")
    if not shutil.which("bwrap"):
        unavailable("bubblewrap is not installed (scripts/test installs it)")
    try:
        entry = pwd.getpwnam(USER)
    except KeyError:
        subprocess.run(["useradd", "-m", "-s", "/bin/bash", USER], check=True)
        entry = pwd.getpwnam(USER)
    # The user runs this checkout's venv, whose interpreter may live in root's home (pyenv):
    # every folder above them must be traversable (search only: o+x, nothing becomes listable).
    real = Path(os.path.realpath(sys.executable))
    for folder in {*real.parents, *Path(sys.executable).parents, *Path(__file__).resolve().parents}:
        mode = folder.stat().st_mode
        if not mode & 0o001:
            folder.chmod(mode | 0o001)
    probe = _as_user([sys.executable, "-c", "import slurm_autoresearch"])
    assert probe.returncode == 0, f"{USER} cannot import ara from {sys.executable}: {probe.stderr}"
    return Attacker(USER, Path(entry.pw_dir), entry.pw_uid)


@dataclass
class Scene:
    base: Path
    repo: Path
    git_dir: Path
    key: str
    secrets: dict[str, str]
    site: Path
    before: dict[str, object]


def _innocent(n: int, key: str) -> str:
    guess = key[:n] + "0" * (32 - n)
    return f'GUESS = "{guess}"\n# ATTACK HERE\n'


def _toml_str(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid TOML basic string


def _task(executor: str, parallel: int, scene_paths: dict[str, str], key: str) -> tuple[str, int]:
    ideas, n_innocent = [], 0
    attacks = list(hostile.ATTACKS.items())
    for i, (name, snippet) in enumerate(attacks):
        code = hostile.attack_code(snippet, **scene_paths) + "# ATTACK HERE\n"
        ideas.append(
            f'[[ideas]]\ntitle = {_toml_str("attack " + name)}\n[[ideas.edits]]\npath = "train.py"\n'
            f'search = "# ATTACK HERE\\n"\nreplace = {_toml_str(code)}\n'
        )
        if i % INNOCENT_EVERY == INNOCENT_EVERY - 1:
            n_innocent += 1
            ideas.append(
                f'[[ideas]]\ntitle = "innocent {n_innocent}"\n[[ideas.edits]]\npath = "train.py"\n'
                f'search = "# ATTACK HERE\\n"\nreplace = {_toml_str(_innocent(4 * n_innocent, key))}\n'
            )
    for name, (path, text) in hostile.COMMITTED.items():
        ideas.append(
            f"[[ideas]]\ntitle = {_toml_str('attack ' + name)}\n[[ideas.edits]]\npath = {_toml_str(path)}\n"
            f'search = ""\nreplace = {_toml_str(text)}\n'
        )
    trials = len(ideas) + 1
    head = f"""\
[task]
name = "hostile"
command = "python train.py"
eval = "python evaluate.py"

[metric]
name = "score"
goal = "max"

[budget]
steps = 1
trials = {trials}
trial_minutes = 1
crash_limit = 1000

[run]
executor = "{executor}"
planner = "offline"
summarizer = "rules"
parallel = {parallel}
poll_seconds = 0.2

[surface]
allow = ["*.py", "scoring/**"]
freeze = ["evaluate.py", "scoring.py"]
hidden = ["answer.txt"]

[slurm]
poll_seconds = 1.0

[noise]
repeats = 1  # the innocent lines score deterministically: seeds would only add jobs

[tracking]
wandb = "off"  # the suite checks that no process of the user outlives the run
"""
    return head + "\n" + "\n".join(ideas), trials


def _files(roots: list[Path]) -> list[Path]:
    found = []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, _dirs, names in os.walk(root):
            for name in names:
                p = Path(dirpath) / name
                if p.is_file() and not p.is_symlink():
                    found.append(p)
    return found


def _snapshot(scene_repo: Path, git_dir: Path, site: Path, home: Path) -> dict[str, object]:
    def listing(folder: Path) -> dict[str, str]:
        return (
            {
                str(p.relative_to(folder)): p.read_bytes().hex()[:64] if p.is_file() else "dir"
                for p in sorted(folder.rglob("*"))
            }
            if folder.exists()
            else {}
        )

    return {
        "hooks": listing(git_dir / "hooks"),
        "config": (git_dir / "config").read_bytes(),
        "info": listing(git_dir / "info"),
        "checkout": [  # ara's own run root aside, the checkout as committed
            line
            for line in _as_user(
                ["git", "status", "--porcelain", "--untracked-files=all", "--ignored"], cwd=scene_repo
            ).stdout.splitlines()
            if not line.startswith("!! .ara/")
        ],
        "head": (git_dir / "HEAD").read_text(),
        "site": sorted(p.name for p in site.iterdir()),
        "home": sorted(str(p.relative_to(home)) for p in home.rglob("*") if "hostile-" not in str(p)),
    }


def _stage(attacker: Attacker, executor: str, parallel: int) -> tuple[Scene, Path]:
    base = attacker.home / f"hostile-{uuid.uuid4().hex[:8]}"
    repo = base / "repo"
    repo.mkdir(parents=True)
    rng = uuid.uuid4().int
    key = "".join(ALPHABET[(rng >> (4 * i)) % len(ALPHABET)] for i in range(32))
    (repo / "train.py").write_text(hostile.TRAIN)
    (repo / "evaluate.py").write_text(hostile.EVALUATE)
    (repo / "scoring.py").write_text(hostile.SCORING)
    (repo / "answer.txt").write_text(key + "\n")
    (repo / ".gitignore").write_text(".ara/\n")
    # Credentials the user keeps in files: the sandbox masks them.
    ssh = attacker.home / ".ssh"
    ssh.mkdir(exist_ok=True)
    secrets = {
        "ANTHROPIC_API_KEY": f"sk-ant-hostile-{uuid.uuid4().hex}",
        "OPENAI_API_KEY": f"sk-openai-{uuid.uuid4().hex}",
        "GH_TOKEN": f"ghp-{uuid.uuid4().hex}",
        "MY_SECRET": f"secret-{uuid.uuid4().hex}",
        "WANDB_API_KEY": f"wandb-{uuid.uuid4().hex}",
    }
    ssh_canary = f"ssh-canary-{uuid.uuid4().hex}"
    (ssh / "id_canary").write_text(ssh_canary + "\n")
    git_dir = repo / ".git"
    site = Path(
        subprocess.run(
            [sys.executable, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    paths = {"home": str(attacker.home), "repo": str(repo), "gitdir": str(git_dir)}
    text, _ = _task(executor, parallel, paths, key)
    (repo / "task.toml").write_text(text)
    subprocess.run(["chown", "-R", f"{USER}:{USER}", str(base), str(ssh)], check=True)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", "hostile task"],
    ):
        out = _as_user(cmd, cwd=repo)
        assert out.returncode == 0, out.stderr
    secrets["ssh"] = ssh_canary
    scene = Scene(base, repo, git_dir, key, secrets, site, _snapshot(repo, git_dir, site, attacker.home))
    return scene, repo / "task.toml"


def _score(guess: str, key: str) -> float:
    return sum(a == b for a, b in zip(guess, key, strict=False)) / len(key)


def _honest(repo: Path, commit: str, key: str) -> float:
    """The score a trial's commit earns by its innocent lines alone (the last GUESS = "..." wins)."""
    out = _as_user(["git", "show", f"{commit}:train.py"], cwd=repo)
    assert out.returncode == 0, out.stderr
    text = out.stdout
    guesses = re.findall(r'^GUESS = "([0-9a-f]{32})"$', text, flags=re.M)
    return _score(guesses[-1] if guesses else "0" * 32, key)


def _hostile_run(attacker: Attacker, executor: str, parallel: int) -> None:
    scene, task = _stage(attacker, executor, parallel)
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        **{k: v for k, v in scene.secrets.items() if k != "ssh"},
    }
    ara = str(Path(sys.executable).parent / "ara")
    started = time.time()
    proc = _as_user([ara, "submit", str(task)], cwd=scene.repo, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    time.sleep(1.0)  # anything that outlived its job would have acted by now

    # No process of the user is left: not the controller, not a daemon a trial started.
    # A zombie (state Z: exited, not yet reaped by its parent) runs nothing and holds nothing; a
    # CI run once listed an exited `[bwrap] <defunct>` here a second after the run.
    listed = subprocess.run(
        ["ps", "-u", USER, "-o", "pid=,ppid=,stat=,args="], capture_output=True, text=True
    ).stdout
    left = [line for line in listed.splitlines() if line.split()[2:3] and not line.split()[2].startswith("Z")]
    assert not left, f"processes of {USER} left after the run:\n{listed}"
    if executor == "slurm":
        queued = subprocess.run(["squeue", "-h", "-u", USER], capture_output=True, text=True).stdout
        assert not queued.strip(), f"jobs of {USER} left in the queue: {queued}"

    run_dirs = list((scene.repo / ".ara" / "runs").iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    db = sqlite3.connect(f"file:{run_dir / 'ledger.sqlite'}?mode=ro", uri=True)
    meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    rows = db.execute(
        "SELECT id, title, metric, decision, commit_sha, reason, job_state FROM trials ORDER BY seq"
    ).fetchall()
    db.close()
    assert meta["sandbox"]["used"] == "bwrap", meta["sandbox"]
    assert meta["state"] == "finished", (meta["state"], meta.get("end_reason"))
    _, expected_trials = _task(executor, parallel, {}, scene.key)
    assert len(rows) >= expected_trials, f"{len(rows)} trials of {expected_trials}: the run was cut short"

    # No metric is forged: every measured trial scores what its innocent lines earn.
    innocents = 0
    for tid, title, metric, decision, commit, reason, _job_state in rows:
        assert decision is not None, (tid, title, reason)
        if metric is None:
            assert decision in ("rejected", "crash"), (tid, title, decision, reason)
            continue
        honest = _honest(scene.repo, commit, scene.key)
        assert metric == pytest.approx(honest), f"{tid} {title}: metric {metric}, honest {honest} ({reason})"
        if title.startswith("innocent"):
            innocents += 1
            n = int(title.split()[1])
            assert metric == pytest.approx(4 * n / 32) and decision == "keep", (tid, title, metric, decision)
    assert innocents == len(hostile.ATTACKS) // INNOCENT_EVERY
    assert rows[0][2] == 0.0  # the baseline's metric as measured, not as an attack rewrote it
    # The frozen-file attacks were caught, not merely harmless.
    by_title = {r[1]: r for r in rows}
    for name in ("edit-frozen-at-run-time", "symlink-frozen-at-run-time"):
        assert by_title[f"attack {name}"][3] == "rejected", by_title[f"attack {name}"]

    # The best branch is the last keep's commit, not where an attack moved it.
    best = _as_user(["git", "rev-parse", meta["best_branch"]], cwd=scene.repo).stdout.strip()
    keeps = [r for r in rows if r[3] == "keep"]
    assert best == keeps[-1][4]

    # Nothing outside the worktrees changed: hooks, git config, checkout, venv, home.
    after = _snapshot(scene.repo, scene.git_dir, scene.site, attacker.home)
    for part in ("hooks", "config", "info", "checkout", "head", "site"):
        assert after[part] == scene.before[part], part
    new_home = set(after["home"]) - set(scene.before["home"])  # type: ignore[arg-type]
    assert not new_home, f"new files in {USER}'s home: {sorted(new_home)}"
    assert not (run_dir / "guidance.md").exists() and not (run_dir / "stop.request").exists()

    # No marker an attack writes and no secret is in any file; the key was never readable.
    mark = b"PW" + b"NED-42"
    secrets = [v.encode() for v in scene.secrets.values()]
    roots = [scene.base, attacker.home, Path("/tmp"), Path("/dev/shm")]
    for path in _files(roots):
        try:  # /tmp is shared: other processes remove files while this scans
            if path.stat().st_mtime < started - 60 and not str(path).startswith(str(scene.base)):
                continue  # untouched since before the run
            data = path.read_bytes()
        except OSError:
            continue
        if "/worktrees/" not in str(path):
            assert mark not in data, f"an attack wrote {path}"
        for secret in secrets:
            if path.name == "id_canary" and secret == scene.secrets["ssh"].encode():
                continue
            assert secret not in data, f"a secret reached {path}"
    # Every attack ran to its end (a typo in an attack would make the suite pass for nothing).
    for tid, title, *_ in rows:
        log = (run_dir / "trials" / tid / "train.log").read_text(errors="replace")
        assert "guess written" in log, (tid, title, log[-2000:])


def test_hostile_trials_cannot_forge_leak_escape_or_linger_locally(attacker: Attacker) -> None:
    _hostile_run(attacker, "local", 2)


def test_hostile_trials_cannot_forge_leak_escape_or_linger_on_slurm(
    attacker: Attacker, slurm_cluster: None
) -> None:
    subprocess.run(["sacctmgr", "-i", "add", "user", USER, "account=root"], capture_output=True, text=True)
    _hostile_run(attacker, "slurm", 4)


def _small_task(repo: Path, train: str, sandbox: str, trials: int = 2) -> Path:
    """The hostile task with a given train.py, `trials` trials and one harmless idea."""
    (repo / "train.py").write_text(train)
    head = _task("local", 1, {}, "x")[0].split("[[ideas]]")[0]
    idea = '[[ideas]]\ntitle = "again"\n[[ideas.edits]]\npath = "train.py"\nsearch = "# more\\n"\n'
    idea += 'replace = "# more\\n# again\\n"\n'
    text = re.sub(r"(?m)^trials = \d+$", f"trials = {trials}", head)
    (repo / "task.toml").write_text(text + f'\n[sandbox]\nmode = "{sandbox}"\n\n' + idea)
    return repo / "task.toml"


def test_without_a_sandbox_the_key_and_the_answer_stay_out_of_reach(attacker: Attacker) -> None:
    """Unprotected runs still never hand over the key: the runner's environment is an allowlist and
    the controller is not dumpable; hidden files leave the worktree while training runs."""
    scene, _ = _stage(attacker, "local", 1)
    train = hostile.TRAIN.replace(
        "# ATTACK HERE\n",
        "pid = os.getpid()\n"
        "for _ in range(6):\n"
        "    pid = int([l for l in open(f'/proc/{pid}/status') if l.startswith('PPid:')][0].split()[1])\n"
        "    if pid <= 1:\n"
        "        break\n"
        "    try:\n"
        "        print('environ of', pid, open(f'/proc/{pid}/environ', 'rb').read())\n"
        "    except OSError as exc:\n"
        "        print('refused', pid, type(exc).__name__)\n"
        "print('answer in worktree:', os.path.exists('answer.txt'))\n"
        "# more\n",
    )
    task = _small_task(scene.repo, train, "none")
    for cmd in (
        ["git", "add", "-A"],
        ["git", "-c", "user.name=a", "-c", "user.email=a@a", "commit", "-qm", "t"],
    ):
        assert _as_user(cmd, cwd=scene.repo).returncode == 0
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        **{k: v for k, v in scene.secrets.items() if k != "ssh"},
    }
    ara = str(Path(sys.executable).parent / "ara")
    proc = _as_user([ara, "submit", str(task)], cwd=scene.repo, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "WARNING: the metric is NOT protected" in proc.stderr
    run_dir = next((scene.repo / ".ara" / "runs").iterdir())
    log = (run_dir / "trials" / "T0001" / "train.log").read_text()
    assert "environ of" in log and "refused" in log  # the runner's readable, the controller's not
    assert "answer in worktree: False" in log
    for path in _files([scene.base]):
        data = path.read_bytes()
        for name, secret in scene.secrets.items():
            if name not in ("ssh", "WANDB_API_KEY"):
                assert secret.encode() not in data, (name, path)
    status = _as_user([ara, "status", str(run_dir)], env=env)
    assert "NOT protected" in status.stdout
    assert "NOT protected" in (run_dir / "report.md").read_text()


def test_git_hooks_and_configured_commands_never_run(toy_repo: Path) -> None:
    """Hooks and commands a repository's config names (perhaps by earlier unsandboxed trial code)
    do not run in any git command of ara's, with the key in its environment."""
    from tests.conftest import write_task

    marker = toy_repo / "hook-ran"
    hooks = toy_repo / ".git" / "hooks"
    for hook in (
        "post-checkout",
        "pre-commit",
        "post-commit",
        "commit-msg",
        "reference-transaction",
        "post-merge",
    ):
        (hooks / hook).write_text(f"#!/bin/sh\necho {hook} >> {marker}\n")
        (hooks / hook).chmod(0o755)
    with (toy_repo / ".git" / "config").open("a") as fh:
        fh.write(
            f"[core]\n\tfsmonitor = echo fsmonitor >> {marker}\n\tpager = echo pager >> {marker}\n"
            f"[diff]\n\texternal = echo diff >> {marker}\n"
        )
    path = write_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n', trials=3)
    out = subprocess.run(
        [str(Path(sys.executable).parent / "ara"), "submit", str(path)],
        cwd=toy_repo,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "ANTHROPIC_API_KEY": "", "ARA_ROOT": ""},
    )
    assert out.returncode == 0, out.stderr
    assert not marker.exists(), marker.read_text()


def test_bwrap_mode_refuses_to_start_without_bubblewrap(toy_repo: Path) -> None:
    from tests.conftest import write_task

    path = write_task(toy_repo, '[sandbox]\nmode = "bwrap"\nbwrap = "/nonexistent/bwrap"\n')
    ara = str(Path(sys.executable).parent / "ara")
    out = subprocess.run([ara, "submit", str(path)], cwd=toy_repo, capture_output=True, text=True)
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and '[sandbox] mode = "bwrap"' in out.stderr, out.stderr
    auto = write_task(toy_repo, '[sandbox]\nbwrap = "/nonexistent/bwrap"\n', name="auto.toml")
    out = subprocess.run([ara, "submit", "--check", str(auto)], cwd=toy_repo, capture_output=True, text=True)
    assert out.returncode == 0 and "NOT protected" in out.stderr, out.stderr


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        (
            '[surface]\nhidden = ["labels.npy"]\n',
            "[surface] hidden: 'labels.npy' matches no committed file",
        ),
        ('[sandbox]\nmode = "jail"\n', "[sandbox] mode"),
        ('[task]\npass_env = ["ANTHROPIC_API_KEY"]\n', "ANTHROPIC_API_KEY is the planner's key"),
    ],
)
def test_sandbox_and_secret_settings_are_checked(toy_repo: Path, extra: str, expected: str) -> None:
    from tests.conftest import TASK

    text = TASK.format(trials=2, parallel=1)
    for table in ("[surface]", "[task]"):
        if extra.startswith(table):  # replace the table's first lines rather than repeat the table
            text = text.replace(table + "\n", extra, 1)
            extra = ""
    (toy_repo / "bad.toml").write_text(text + extra)
    ara = str(Path(sys.executable).parent / "ara")
    out = subprocess.run([ara, "submit", "--check", "bad.toml"], cwd=toy_repo, capture_output=True, text=True)
    assert out.returncode == 2 and expected in out.stderr and out.stderr.count("\n") <= 2, out.stderr


def test_a_node_without_a_sandbox_turns_the_whole_run_unprotected(toy_repo: Path, tmp_path: Path) -> None:
    """`auto` probes on the node that runs the job: where the login node had bubblewrap and the
    job's node has none, the trial runs, and the run says from then on that it is not protected."""
    from slurm_autoresearch.ledger import Ledger
    from slurm_autoresearch.loop.launcher import launch
    from slurm_autoresearch.loop.preflight import load_task
    from tests.conftest import write_task

    real = shutil.which("bwrap")
    if real is None:
        unavailable("bubblewrap is not installed")
    gone = tmp_path / "node-has-no-bwrap"
    wrapper = tmp_path / "bwrap-on-some-nodes"
    wrapper.write_text(f'#!/bin/sh\n[ -e "{gone}" ] && exit 1\nexec "{real}" "$@"\n')
    wrapper.chmod(0o755)
    path = write_task(toy_repo, f'[sandbox]\nbwrap = "{wrapper}"\n', trials=1)
    controller = launch(load_task(path), echo=lambda _: None)
    gone.touch()  # the login node probed; the job's node will not have it
    controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    info, (trial,) = ledger.meta()["sandbox"], ledger.trials()
    ledger.close()
    assert trial.metric is not None  # it ran, unprotected
    assert info["used"] == "none" and "T0001 ran without one" in info["why"], info
    outcome = json.loads((controller.rundir.trial_dir("T0001") / "outcome.json").read_text())
    assert outcome["sandbox"] == "none"
    assert "NOT protected" in (controller.rundir.path / "report.md").read_text()
