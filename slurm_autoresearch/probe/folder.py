"""The probed folder: which files are data or config, scratch copies, snapshots, bounded reads."""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
from pathlib import Path


def words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


SKIP_DIRS = words(
    ".git .ara __pycache__ .venv venv wandb node_modules .ipynb_checkpoints .mypy_cache .pytest_cache "
    ".ruff_cache .tox .eggs"
)
BIG_FILE = 64 * 2**20  # larger files are linked into the scratch copy, not copied
COPY_LIMIT = 512 * 2**20  # and every file once this much is copied
DATA_SUFFIXES = words(
    ".npz .npy .csv .tsv .pt .pth .json .jsonl .txt .parquet .arrow .h5 .hdf5 .pkl .pickle .bin .tar .gz "
    ".zip .feather .tfrecord .safetensors .ckpt .mat .idx .png .jpg .wav"
)
DATA_DIRS = ("data", "datasets", "dataset")
NOT_DATA = words("requirements.txt license.txt package.json tsconfig.json predictions.json")
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
NOT_CONFIG = words("task.toml pyproject.toml package.json tsconfig.json environment.yml")


def read_head(path: Path, limit: int = 1 << 20) -> str:
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


def is_config(rel: str) -> bool:
    """A settings file beside the code: TOML or YAML, or JSON named like one (config.json)."""
    path = Path(rel)
    if "/" in rel or path.name in NOT_CONFIG or path.suffix not in CONFIG_SUFFIXES:
        return False
    return path.suffix != ".json" or bool(re.search(r"conf|param|setting|hyper", path.name, re.I))


def _skipped(path: Path) -> bool:
    return path.name in SKIP_DIRS or path.name.endswith(".egg-info") or (path / "pyvenv.cfg").exists()


def walk_files(root: Path) -> list[str]:
    """Files under root (relative, POSIX), the skipped folders aside."""
    found = []
    for here, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not _skipped(Path(here) / d))
        rel = Path(here).relative_to(root)
        found += [(rel / f).as_posix() for f in sorted(files)]
    return found


def copy_tree(source: Path, target: Path) -> list[str]:
    """A scratch copy of the folder; files over BIG_FILE, and all once COPY_LIMIT bytes are
    copied, are linked to the original instead, and returned."""
    linked, copied = [], 0
    for rel in walk_files(source):
        src, dst = source / rel, target / rel
        dst.parent.mkdir(parents=True, exist_ok=True)
        size = src.lstat().st_size
        if src.is_symlink():
            dst.symlink_to(os.readlink(src))
        elif size > BIG_FILE or copied + size > COPY_LIMIT:
            dst.symlink_to(src.resolve())
            linked.append(rel)
        else:
            shutil.copy2(src, dst)
            copied += size
    return linked


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    out = {}
    for rel in walk_files(root):
        with contextlib.suppress(OSError):
            st = (root / rel).lstat()
            out[rel] = (st.st_size, st.st_mtime_ns)
    return out


def code_hash(directory: Path) -> str:
    """What the probe's findings depend on: the folder's scripts and config files."""
    digest = hashlib.sha256()
    for rel in walk_files(directory)[:5000]:
        path = directory / rel
        if path.suffix in (".py", ".sh") or (
            path.suffix in CONFIG_SUFFIXES[:3] and path.name not in NOT_CONFIG
        ):
            digest.update(rel.encode() + b"\0" + hashlib.sha256(read_head(path, 1 << 22).encode()).digest())
    return digest.hexdigest()


def atime_works(where: Path) -> bool:
    """Whether reading a file here moves its access time back from the epoch (relatime does)."""
    test = where / ".atime-test"
    test.write_text("x")
    os.utime(test, ns=(0, test.stat().st_mtime_ns))
    test.read_text()
    works = test.stat().st_atime_ns > 0
    test.unlink()
    return works


def is_data(rel: str) -> bool:
    path = Path(rel)
    if (
        path.name.lower() in NOT_DATA
        or is_config(rel)
        or path.suffix in (".md", ".rst", ".py", ".sh", ".toml")
    ):
        return False
    return path.suffix.lower() in DATA_SUFFIXES or any(part.lower() in DATA_DIRS for part in path.parts[:-1])
