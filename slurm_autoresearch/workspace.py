"""Git side of a run (GitPython): trial worktrees, edits, edit-surface checks, keep and discard refs."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import git

from .errors import EditError
from .hypothesis import Edit, whole_line_problem
from .jobenv import git_environ
from .safetext import error_line
from .surface import EditSurface, safe_relpath

# Commits made by ara carry this identity when the user has none configured (CI, fresh accounts).
_FALLBACK_IDENTITY = {
    "GIT_AUTHOR_NAME": "ara",
    "GIT_AUTHOR_EMAIL": "ara@localhost",
    "GIT_COMMITTER_NAME": "ara",
    "GIT_COMMITTER_EMAIL": "ara@localhost",
}


_NAME_MAX = 255  # bytes in one path segment on every usual filesystem


def repo_toplevel(path: Path) -> Path | None:
    """The root of the git work tree containing path, or None when path is not inside one."""
    g = git.Git(str(path))
    g.update_environment(**git_environ())
    try:
        out = g.rev_parse("--show-toplevel")
    except (git.GitCommandError, git.NoSuchPathError, FileNotFoundError, NotADirectoryError):
        return None
    return Path(out).resolve()


def _to_workdir(repo_path: str, workdir: str) -> str | None:
    """Repo-relative path to workdir-relative, or None when it lies outside the workdir."""
    if workdir in ("", "."):
        return repo_path
    prefix = workdir.rstrip("/") + "/"
    return repo_path[len(prefix) :] if repo_path.startswith(prefix) else None


def _in_repo(workdir: str, rel: str) -> str:
    return rel if workdir in ("", ".") else f"{workdir}/{rel}"


@dataclass(frozen=True)
class Materialized:
    """A trial ready to run: its worktree, commit and the diff against its parent."""

    worktree: Path
    commit: str
    patch: str
    changed: tuple[str, ...]


class Workspace:
    """The user's repository as ara sees it; never touches the checked-out branch, index or tree."""

    def __init__(
        self,
        repo_root: Path,
        workdir: str,
        run_id: str,
        worktrees: Path,
        surface: EditSurface,
        max_file_bytes: int,
    ) -> None:
        self.root = repo_root
        self.workdir = workdir
        self.run_id = run_id
        self.worktrees = worktrees
        self.surface = surface
        self.max_file_bytes = max_file_bytes
        self.repo = git.Repo(str(repo_root))
        # No hook or repository-configured command runs in any git that ara starts: trial code
        # without a sandbox could have written them, and the controller's environment is near.
        self.repo.git.update_environment(**git_environ())
        self._env = {**git_environ(), **self._identity_env()}

    def close(self) -> None:
        self.repo.close()

    def _identity_env(self) -> dict[str, str]:
        reader = self.repo.config_reader()
        has = reader.has_option("user", "name") and reader.has_option("user", "email")
        env = {} if has else dict(_FALLBACK_IDENTITY)
        return {k: v for k, v in env.items() if k not in os.environ}

    def clear_stale_locks(self) -> list[str]:
        """Lock files a killed git left on this run's refs and worktrees (call only as the run's
        lock holder: the controller that ran those git commands is dead)."""
        git_dir = Path(self.repo.git_dir)
        patterns = [
            f"refs/heads/ara/{self.run_id}/*.lock",
            f"refs/ara/{self.run_id}/*.lock",
            "worktrees/T*/*.lock",
        ]
        removed = []
        for pattern in patterns:
            for lock in git_dir.glob(pattern):
                if pattern.startswith("worktrees") and not self._ours(
                    git_dir / "worktrees" / lock.parent.name
                ):
                    continue
                lock.unlink(missing_ok=True)
                removed.append(str(lock.relative_to(git_dir)))
        return removed

    def _ours(self, admin: Path) -> bool:
        """A linked worktree's admin dir belongs to this run when its gitdir points into our worktrees."""
        try:
            return Path((admin / "gitdir").read_text().strip()).is_relative_to(self.worktrees)
        except OSError:
            return False

    # -- names ------------------------------------------------------------------------------
    @property
    def best_branch(self) -> str:
        return f"ara/{self.run_id}/best"

    def trial_branch(self, trial_id: str) -> str:
        return f"ara/{self.run_id}/{trial_id}"

    def trial_ref(self, trial_id: str) -> str:
        return f"refs/ara/{self.run_id}/{trial_id}"

    # -- reading ----------------------------------------------------------------------------
    def head(self) -> str:
        return self.repo.head.commit.hexsha

    def tracked_files(self, commit: str) -> list[str]:
        """Workdir-relative paths of the files tracked at commit under the workdir."""
        args = ["-r", "--name-only", "-z", commit]
        if self.workdir not in ("", "."):
            args += ["--", self.workdir]
        out = self.repo.git.ls_tree(*args, strip_newline_in_stdout=False)
        paths = (_to_workdir(p, self.workdir) for p in out.split("\0") if p)
        return sorted(p for p in paths if p is not None)

    def read_bytes(self, commit: str, rel: str) -> bytes:
        blob = self.repo.commit(commit).tree / _in_repo(self.workdir, rel)
        return blob.data_stream.read()

    def read_text(self, commit: str, rel: str) -> str:
        return self.read_bytes(commit, rel).decode("utf-8", errors="replace")

    def frozen_hashes(self, commit: str) -> dict[str, str]:
        """sha256 of every tracked frozen file at commit (workdir-relative keys)."""
        frozen = self.surface.frozen_among(self.tracked_files(commit))
        return {rel: hashlib.sha256(self.read_bytes(commit, rel)).hexdigest() for rel in frozen}

    def surface_files(self, commit: str) -> dict[str, str]:
        """The editable files at commit (what a planner may read and change)."""
        out = {}
        for rel in self.surface.allowed_among(self.tracked_files(commit)):
            data = self.read_bytes(commit, rel)
            if len(data) <= self.max_file_bytes:
                out[rel] = data.decode("utf-8", errors="replace")
        return out

    def dirty_paths(self) -> list[str]:
        """Workdir-relative paths with uncommitted changes (staged, unstaged or untracked)."""
        args = ["--porcelain", "-z", "--untracked-files=all"]
        if self.workdir not in ("", "."):
            args += ["--", self.workdir]
        out = self.repo.git.status(*args, strip_newline_in_stdout=False)
        entries, paths = out.split("\0"), []
        i = 0
        while i < len(entries):
            entry = entries[i]
            if len(entry) > 3:
                paths.append(entry[3:])
                if entry[0] in "RC":  # renames carry the source path as the next entry
                    i += 1
            i += 1
        rels = (_to_workdir(p, self.workdir) for p in paths)
        return sorted(p for p in rels if p is not None)

    def diff(self, parent: str, commit: str) -> str:
        if parent == commit:
            return ""
        return self.repo.git.diff(
            parent, commit, "--no-renames", "--no-ext-diff", "--no-textconv", strip_newline_in_stdout=False
        )

    # -- branches ---------------------------------------------------------------------------
    def keep(self, commit: str) -> None:
        self.repo.git.update_ref(f"refs/heads/{self.best_branch}", commit)

    # -- trials -----------------------------------------------------------------------------
    def worktree_path(self, trial_id: str) -> Path:
        return self.worktrees / trial_id

    def materialize(self, trial_id: str, parent: str, edits: list[Edit], message: str) -> Materialized:
        """Branch and worktree from parent, apply edits, check the surface, commit.

        Raises EditError with the reason; the worktree and branch are then gone again.
        """
        for edit in edits:
            try:
                safe_relpath(edit.path)
            except ValueError as exc:
                raise EditError(f"edit rejected: {exc}") from None
            reason = self.surface.violation(edit.path)
            if reason:
                raise EditError(f"edit rejected: {reason}")
        try:
            wt = self._add_worktree(trial_id, parent)
            if not edits:
                commit = parent
                changed: tuple[str, ...] = ()
            else:
                for edit in edits:
                    self._apply(wt, edit)
                changed = self._stage_and_check(wt)
                if not changed:
                    raise EditError("edits change nothing")
                g = self._git(wt)
                g.execute(
                    ["git", "-c", "gc.auto=0", "commit", "-q", "--no-verify", "-m", message],
                    env=self._env,
                )
                commit = g.rev_parse("HEAD")
            self.repo.git.update_ref(self.trial_ref(trial_id), commit)
            return Materialized(wt, commit, self.diff(parent, commit), changed)
        except EditError:
            self._discard(trial_id)
            raise
        except git.GitCommandError as exc:
            self._discard(trial_id)
            raise EditError(f"git failed: {exc.stderr.strip() or exc}") from None
        except (OSError, UnicodeError, ValueError) as exc:
            # Whatever else the filesystem or an encoding refuses is the hypothesis's failure.
            self._discard(trial_id)
            raise EditError(f"edit rejected: {error_line(exc)}") from None

    def _discard(self, trial_id: str) -> None:
        """Release a half-made trial; a release that fails too must not hide the first failure."""
        with contextlib.suppress(OSError, git.GitCommandError):
            self.release(trial_id)

    def combine(self, trial_id: str, base: str, other: str, message: str) -> Materialized:
        """A commit merging `other` into `base` (two changes that each improved on a common parent).
        Raises EditError naming the conflicting files; the worktree is then gone again."""
        wt = self._add_worktree(trial_id, base)
        g = self._git(wt)
        try:
            g.execute(
                ["git", "-c", "gc.auto=0", "merge", "-q", "--no-ff", "--no-verify", "-m", message, other],
                env=self._env,
            )
        except git.GitCommandError as exc:
            conflicts = g.diff("--name-only", "--diff-filter=U").split()
            self.release(trial_id)
            found = ", ".join(conflicts) or (exc.stderr.strip() or str(exc))
            raise EditError(f"merge conflicts in {found}") from None
        commit = g.rev_parse("HEAD")
        self.repo.git.update_ref(self.trial_ref(trial_id), commit)
        changed = tuple(self.repo.git.diff("--name-only", "--no-renames", base, commit).split())
        return Materialized(wt, commit, self.diff(base, commit), changed)

    @property
    def git_dir(self) -> Path:
        """The repository's own git directory (shared by every worktree): hooks, config, objects."""
        return Path(self.repo.common_dir).resolve()

    def _git(self, worktree: Path) -> git.Git:
        g = git.Git(str(worktree))
        g.update_environment(**self._env)
        return g

    def contains(self, commit: str, ancestor: str) -> bool:
        """Whether `ancestor`'s change is already in `commit`."""
        try:
            self.repo.git.merge_base("--is-ancestor", ancestor, commit)
            return True
        except git.GitCommandError:
            return False

    def restore(self, trial_id: str, commit: str) -> Path:
        """The trial's worktree at its commit, made again if it vanished (idempotent)."""
        wt = self.worktree_path(trial_id)
        if (wt / ".git").exists():
            return wt
        return self._add_worktree(trial_id, commit)

    def _add_worktree(self, trial_id: str, parent: str) -> Path:
        wt = self.worktree_path(trial_id)
        if wt.exists():  # left over by an interrupted attempt
            self.release(trial_id)
        self.repo.git.worktree("prune")  # forget worktrees whose directory vanished
        wt.parent.mkdir(parents=True, exist_ok=True)
        self.repo.git.worktree("add", "-q", "-B", self.trial_branch(trial_id), str(wt), parent)
        return wt

    def _apply(self, wt: Path, edit: Edit) -> None:
        rel = _in_repo(self.workdir, safe_relpath(edit.path))
        target = wt / rel
        long = [part for part in rel.split("/") if len(part.encode("utf-8")) > _NAME_MAX]
        if long:
            raise EditError(f"edit rejected: {edit.path} has a name longer than {_NAME_MAX} bytes")
        # Refuse to follow symlinks anywhere on the way: a link could point outside the worktree.
        probe = wt
        for part in rel.split("/"):
            probe = probe / part
            if probe.is_symlink():
                raise EditError(f"edit rejected: {edit.path} goes through symlink {probe.relative_to(wt)}")
            if probe != target and probe.exists() and not probe.is_dir():
                raise EditError(f"edit rejected: {edit.path} goes through the file {probe.relative_to(wt)}")
        if target.exists() and not target.is_file():
            raise EditError(f"edit rejected: {edit.path} is not a regular file")
        if edit.search == "":
            if target.exists():
                raise EditError(f"edit rejected: empty search text but {edit.path} exists")
            text = ""
        else:
            if not target.exists():
                raise EditError(f"edit rejected: {edit.path} does not exist")
            if target.stat().st_size > self.max_file_bytes:
                raise EditError(f"edit rejected: {edit.path} is over the {self.max_file_bytes} byte limit")
            try:
                text = target.read_text(encoding="utf-8")
            except UnicodeDecodeError:
                raise EditError(f"edit rejected: {edit.path} is not UTF-8 text") from None
            problem = whole_line_problem(text, edit.search)
            if problem:
                raise EditError(f"edit rejected: {edit.path}: {problem}")
        new = text.replace(edit.search, edit.replace, 1) if edit.search else edit.replace
        if len(new.encode("utf-8")) > self.max_file_bytes:
            raise EditError(f"edit rejected: {edit.path} would exceed the {self.max_file_bytes} byte limit")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(new, encoding="utf-8")

    def _stage_and_check(self, wt: Path) -> tuple[str, ...]:
        g = self._git(wt)
        g.add("-A")
        out = g.diff("--cached", "--name-only", "--no-renames", "-z", strip_newline_in_stdout=False)
        changed = [p for p in out.split("\0") if p]
        for repo_path in changed:
            rel = _to_workdir(repo_path, self.workdir)
            if rel is None:
                raise EditError(f"edit rejected: {repo_path} is outside the workdir {self.workdir}")
            reason = self.surface.violation(rel)
            if reason:
                raise EditError(f"edit rejected: {reason}")
            if (wt / repo_path).is_symlink():
                raise EditError(f"edit rejected: {rel} is a symlink")
        return tuple(sorted(changed))

    def release(self, trial_id: str) -> None:
        """Remove the trial's worktree and branch; its commit stays under refs/ara/."""
        wt = self.worktree_path(trial_id)
        if wt.exists():
            try:
                self.repo.git.worktree("remove", "--force", "--force", str(wt))
            except git.GitCommandError:
                shutil.rmtree(wt, ignore_errors=True)
        self.repo.git.worktree("prune")
        branch = self.trial_branch(trial_id)
        if branch in (h.name for h in self.repo.heads):
            self.repo.git.branch("-D", branch)
