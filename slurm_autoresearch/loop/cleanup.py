"""`ara clean`: an ended run's worktrees, branches and refs go; its ledger, reports and logs stay."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import git

from ..jobenv import git_environ
from ..ledger import Ledger
from ..rundir import RunDir
from ..views.status import run_state

ENDED = ("finished", "stopped", "failed")  # states a run may be cleaned in


@dataclass(frozen=True)
class Plan:
    """What `ara clean` removes from the repository, and the branches it leaves (and why)."""

    repo: Path | None  # None: the repository is gone, only worktree folders remain to remove
    worktrees: list[Path]
    refs: list[str]  # refs/heads/ara/<run>/* and refs/ara/<run>/*
    spared: dict[str, str]  # ref -> why it stays


def refuse(rundir: RunDir) -> str:
    """Why the run may not be cleaned ("" when it may): a live controller, a run that has not
    ended, or jobs the ledger still counts as live (they may be running in their worktrees)."""
    holder = rundir.lock_holder()
    if holder and rundir.holder_alive(holder) is not False:
        return (
            f"run {rundir.run_id} is held by controller pid {holder.get('pid')} on {holder.get('host')}; "
            f"`ara stop {rundir.run_id}` first"
        )
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        state = run_state(rundir, ledger.meta().get("state", "running"))
        live = ledger.live_count()
    finally:
        ledger.close()
    if state not in ENDED:
        return f"run {rundir.run_id} is {state}, not ended; `ara resume` or `ara stop` it first"
    if live:
        return f"run {rundir.run_id} has {live} jobs that may still run in its worktrees"
    return ""


def plan(rundir: RunDir, repo: Path | None, *, keep_best: bool = False) -> Plan:
    """The run's worktrees (registered with git or only left on disk) and refs. A branch checked
    out in a worktree that is not the run's (the user's checkout) is spared, as is the best
    branch with keep_best."""
    ours = rundir.worktrees.resolve()
    folders = sorted(p for p in ours.iterdir() if p.is_dir()) if ours.is_dir() else []
    if repo is None or not (repo / ".git").exists():
        return Plan(None, folders, [], {})
    g = _git(repo)
    run = rundir.run_id
    refs = g.for_each_ref("--format=%(refname)", f"refs/heads/ara/{run}/", f"refs/ara/{run}/").split()
    worktrees, elsewhere = set(folders), {}
    path: Path | None = None
    for line in g.worktree("list", "--porcelain").splitlines():
        if line.startswith("worktree "):
            path = Path(line.split(" ", 1)[1]).resolve()
            if path.is_relative_to(ours):
                worktrees.add(path)
        elif line.startswith("branch ") and path is not None and not path.is_relative_to(ours):
            elsewhere[line.split(" ", 1)[1]] = f"checked out in {path}"
    spared = {r: elsewhere[r] for r in refs if r in elsewhere}
    best = f"refs/heads/ara/{run}/best"
    if keep_best and best in refs:
        spared.setdefault(best, "--keep-best")
    return Plan(repo, sorted(worktrees), [r for r in refs if r not in spared], spared)


def clean(rundir: RunDir, todo: Plan) -> None:
    """Remove what the plan names: worktrees first (a branch checked out in one cannot go), then
    the refs in one `git update-ref --stdin`, then git's records of vanished worktrees."""
    g = _git(todo.repo) if todo.repo is not None else None
    for wt in todo.worktrees:
        if g is not None:
            # Not registered, or half gone: the folder goes below either way.
            with contextlib.suppress(git.GitCommandError):
                g.worktree("remove", "--force", "--force", str(wt))
        if wt.is_relative_to(rundir.worktrees.resolve()):
            shutil.rmtree(wt, ignore_errors=True)
    if g is None:
        return
    g.worktree("prune")
    if todo.refs:
        with tempfile.TemporaryFile() as commands:  # one git for thousands of refs
            commands.write("".join(f"delete {r}\n" for r in todo.refs).encode())
            commands.seek(0)
            g.execute(["git", "update-ref", "--stdin"], istream=commands)


def _git(repo: Path) -> git.Git:
    g = git.Git(str(repo))
    g.update_environment(**git_environ())  # no hook or configured command runs
    return g


def repo_of(rundir: RunDir) -> Path | None:
    """The repository the run's trials were committed in, from its ledger."""
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        repo = ledger.meta().get("repo")
    finally:
        ledger.close()
    return Path(repo) if repo else None
