"""Workspace: worktrees, search/replace edits, the edit surface and hostile edits, with real git."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from slurm_autoresearch.errors import EditError
from slurm_autoresearch.hypothesis import Edit
from slurm_autoresearch.surface import EditSurface
from slurm_autoresearch.workspace import Workspace

from .conftest import commit_all, git, repo_state


def _ws(
    repo: Path,
    tmp_path: Path,
    allow: tuple[str, ...] = ("*.py", "config.toml", "src/**", "link/**"),
    max_bytes: int = 4096,
) -> Workspace:
    surface = EditSurface.parse(allow, ["evaluate.py"])
    return Workspace(repo, ".", "run1", tmp_path / "wt", surface, max_bytes)


def test_materialize_commits_in_a_worktree_and_keeps_a_ref(toy_repo: Path, tmp_path: Path) -> None:
    before = repo_state(toy_repo)
    ws = _ws(toy_repo, tmp_path)
    base = ws.head()
    made = ws.materialize(
        "T0002",
        base,
        [Edit("config.toml", "x = 0.5  # the x knob", "x = 1.5  # the x knob")],
        "T0002: x\n\nwhy",
    )
    assert made.changed == ("config.toml",)
    assert (made.worktree / "config.toml").read_text().startswith("x = 1.5")
    assert git(toy_repo, "rev-parse", "refs/ara/run1/T0002").strip() == made.commit
    assert git(toy_repo, "rev-parse", f"{made.commit}^").strip() == base
    assert "+x = 1.5" in made.patch
    ws.keep(made.commit)
    ws.release("T0002")
    assert not made.worktree.exists()
    assert git(toy_repo, "rev-parse", "ara/run1/best").strip() == made.commit
    assert "ara/run1/T0002" not in git(toy_repo, "branch", "--list")
    assert git(toy_repo, "cat-file", "-t", "refs/ara/run1/T0002").strip() == "commit"
    assert repo_state(toy_repo) == before  # HEAD, branch, index and working tree untouched
    ws.close()


def test_new_file_with_empty_search(toy_repo: Path, tmp_path: Path) -> None:
    ws = _ws(toy_repo, tmp_path)
    made = ws.materialize("T0002", ws.head(), [Edit("src/extra.py", "", "X = 1\n")], "new file")
    assert made.changed == ("src/extra.py",)
    ws.release("T0002")


@pytest.mark.parametrize(
    ("edit", "reason"),
    [
        (Edit("evaluate.py", "import json", "import json  # tampered"), "evaluate.py is frozen"),
        (Edit("../x.py", "", "boom"), "climbs out with '..'"),
        (Edit("/tmp/ara-abs.py", "", "boom"), "absolute path"),
        (Edit(".git/config", "", "[core]"), "points into .git"),
        (Edit("sub/.git/config", "", "[core]"), "points into .git"),
        (Edit("README.md", "toy", "pwned"), "outside the edit surface"),
        (Edit("train.py", "no such text anywhere", "x"), "search text not found"),
        (Edit("train.py", "cfg", "x"), "occurs only inside a line"),
        (
            Edit("train.py", '  raise RuntimeError("boom from train.py")\n', "x"),
            "only inside a line (line 12)",
        ),
        (Edit("train.py", "    import math", "x"), "search text not found"),
        (Edit("missing.py", "a", "b"), "missing.py does not exist"),
        (Edit("train.py", "", "overwrite"), "empty search text but train.py exists"),
        (Edit("config.toml", "x = 0.5  # the x knob", "x = 0.5  # the x knob"), "edits change nothing"),
        (Edit("src/big.py", "", "#" * 5000), "exceed the 4096 byte limit"),
    ],
)
def test_bad_edits_are_rejected_with_the_reason(
    toy_repo: Path, tmp_path: Path, edit: Edit, reason: str
) -> None:
    before = repo_state(toy_repo)
    ws = _ws(toy_repo, tmp_path)
    with pytest.raises(EditError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        ws.materialize("T0002", ws.head(), [edit], "bad")
    assert not ws.worktree_path("T0002").exists()
    assert "ara/run1/T0002" not in git(toy_repo, "branch", "--list")
    assert not Path("/tmp/ara-abs.py").exists()
    assert not (toy_repo.parent / "x.py").exists()
    assert repo_state(toy_repo) == before
    ws.close()


def test_symlinks_are_never_followed(toy_repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim.py").write_text("SAFE = True\n")
    os.symlink(outside / "victim.py", toy_repo / "alias.py")
    os.symlink(outside, toy_repo / "link")
    commit_all(toy_repo, "links")
    ws = _ws(toy_repo, tmp_path)
    for edit in (
        Edit("alias.py", "SAFE = True", "SAFE = False"),
        Edit("link/victim.py", "SAFE = True", "X"),
        Edit("link/new.py", "", "X = 1\n"),
    ):
        with pytest.raises(EditError, match="symlink"):
            ws.materialize("T0002", ws.head(), [edit], "via link")
    assert (outside / "victim.py").read_text() == "SAFE = True\n"
    assert not (outside / "new.py").exists()
    ws.close()


def test_surface_files_and_frozen_hashes(toy_repo: Path, tmp_path: Path) -> None:
    ws = _ws(toy_repo, tmp_path)
    head = ws.head()
    assert set(ws.surface_files(head)) == {"train.py", "config.toml"}
    hashes = ws.frozen_hashes(head)
    assert list(hashes) == ["evaluate.py"] and len(hashes["evaluate.py"]) == 64
    ws.close()


def test_workdir_prefix(toy_repo: Path, tmp_path: Path) -> None:
    sub = toy_repo / "exp"
    sub.mkdir()
    (sub / "config.toml").write_text("x = 1\n")
    (toy_repo / "config.toml").write_text("x = 7  # outside the workdir\n")
    commit_all(toy_repo, "exp")
    surface = EditSurface.parse(["config.toml"], [])
    ws = Workspace(toy_repo, "exp", "run1", tmp_path / "wt", surface, 4096)
    assert ws.tracked_files(ws.head()) == ["config.toml"]
    made = ws.materialize("T0002", ws.head(), [Edit("config.toml", "x = 1", "x = 2")], "m")
    assert made.changed == ("exp/config.toml",)
    assert (made.worktree / "config.toml").read_text().startswith("x = 7")
    ws.release("T0002")
    ws.close()


def test_stale_git_locks_of_this_run_are_cleared_and_others_kept(toy_repo: Path, tmp_path: Path) -> None:
    ws = _ws(toy_repo, tmp_path)
    base = ws.head()
    made = ws.materialize(
        "T0002",
        base,
        [Edit("config.toml", "x = 0.5  # the x knob", "x = 1.5  # the x knob")],
        "T0002: x\n\nwhy",
    )
    git_dir = toy_repo / ".git"
    # what a git killed mid-command leaves: the best branch's ref lock and a worktree index lock
    best_lock = git_dir / "refs/heads/ara/run1/best.lock"
    best_lock.write_text(base + "\n")
    index_lock = git_dir / "worktrees/T0002/index.lock"
    index_lock.write_text("")
    other = git_dir / "refs/heads/ara/run2/best.lock"  # another run's: maybe live, not ours
    other.parent.mkdir(parents=True)
    other.write_text("")
    with pytest.raises(Exception, match="lock"):
        ws.keep(made.commit)
    removed = ws.clear_stale_locks()
    assert sorted(removed) == ["refs/heads/ara/run1/best.lock", "worktrees/T0002/index.lock"]
    assert other.exists() and not best_lock.exists() and not index_lock.exists()
    ws.keep(made.commit)  # the branch moves again
    assert git(toy_repo, "rev-parse", "ara/run1/best").strip() == made.commit
    ws.release("T0002")
    ws.close()


@pytest.mark.parametrize(
    ("text", "search", "ok"),
    [
        ("a = 1\nb = 2\n", "a = 1", True),  # a whole line without its newline
        ("a = 1\nb = 2\n", "b = 2\n", True),
        ("a = 1\nb = 2", "b = 2", True),  # the last line, no newline at the end of the file
        ("a = 1\r\nb = 2\r\n", "a = 1", True),
        ("a = 1\nb = 2\n", "a = 1\nb = 2\n", True),  # several lines
        ("ba = 1\n", "a = 1", False),  # begins mid-line
        ("a = 10\n", "a = 1", False),  # ends mid-line
        ("        x = f(y)\n", "    x = f(y)\n", False),  # 4 spaces of indent where the code has 8
        ("a = 1\na = 1\n", "a = 1\n", False),  # twice
        ("xa = 1\na = 1\n", "a = 1\n", True),  # once as a line, once inside one: the line counts
    ],
)
def test_search_blocks_match_whole_lines_exactly_once(text: str, search: str, ok: bool) -> None:
    from slurm_autoresearch.hypothesis import whole_line_problem

    assert (whole_line_problem(text, search) is None) is ok
