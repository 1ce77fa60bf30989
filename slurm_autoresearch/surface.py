"""Edit surface: which paths a trial may change (`allow`) and which must stay byte-identical (`freeze`)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path


def safe_relpath(path: str) -> str:
    """Normalize a path that must stay inside the workdir, or raise ValueError saying why not.

    Rejected before anything touches the filesystem: empty, absolute, backslashes,
    `..`, and any component named `.git` (case-folded, for case-insensitive filesystems).
    """
    if not isinstance(path, str) or not path.strip():
        raise ValueError("empty path")
    if path.startswith(("/", "~")) or re.match(r"^[A-Za-z]:", path):
        raise ValueError(f"absolute path {path!r}")
    if "\\" in path or "\0" in path:
        raise ValueError(f"path {path!r} contains a backslash or NUL")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    if not parts:
        raise ValueError(f"path {path!r} names the workdir itself")
    if ".." in parts:
        raise ValueError(f"path {path!r} climbs out with '..'")
    if any(p.casefold() == ".git" for p in parts):
        raise ValueError(f"path {path!r} points into .git")
    return "/".join(parts)


def _segment_regex(segment: str, pattern: str) -> str:
    """Translate one path segment; `*` and `?` never match `/`, unlike fnmatch."""
    out, i = [], 0
    while i < len(segment):
        c = segment[i]
        if c == "*":
            if segment.startswith("**", i):
                raise ValueError(f"glob {pattern!r}: '**' must be a whole path segment")
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            end = segment.find("]", i + 2 if segment[i + 1 : i + 2] in ("!", "]") else i + 1)
            if end < 0:
                raise ValueError(f"glob {pattern!r}: unclosed '['")
            body = segment[i + 1 : end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("(?!/)[" + body.replace("\\", "\\\\") + "]")
            i = end
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass(frozen=True)
class PathGlob:
    """A glob over workdir-relative paths: `*` stays within a segment, `**` spans segments."""

    pattern: str
    regex: re.Pattern[str] = field(compare=False, repr=False)

    @classmethod
    def parse(cls, pattern: str) -> PathGlob:
        if not isinstance(pattern, str) or not pattern.strip():
            raise ValueError("empty glob")
        if pattern.endswith("/"):
            raise ValueError(f"glob {pattern!r} ends with '/': name files, e.g. {pattern}**")
        try:
            safe_relpath(pattern)
        except ValueError as exc:
            raise ValueError(f"glob {exc}") from None
        segments = [s for s in pattern.split("/") if s not in ("", ".")]
        parts: list[str] = []
        for k, seg in enumerate(segments):
            last = k == len(segments) - 1
            if seg == "**":
                # `**/` matches zero or more directories; a trailing `**` anything below.
                parts.append(".*" if last else "(?:[^/]+/)*")
            else:
                parts.append(_segment_regex(seg, pattern) + ("" if last else "/"))
        return cls(pattern, re.compile("".join(parts) + r"\Z"))

    def matches(self, path: str) -> bool:
        return self.regex.match(path) is not None


@dataclass(frozen=True)
class EditSurface:
    """The allow, freeze and hidden globs of a task, relative to its workdir; hidden files are
    frozen too, and the training never reads them (the runner and the sandbox see to that)."""

    allow: tuple[PathGlob, ...]
    freeze: tuple[PathGlob, ...]
    hidden: tuple[PathGlob, ...] = ()

    @classmethod
    def parse(cls, allow: Iterable[str], freeze: Iterable[str], hidden: Iterable[str] = ()) -> EditSurface:
        hide = tuple(PathGlob.parse(p) for p in hidden)
        freeze_globs = tuple(PathGlob.parse(p) for p in freeze)
        return cls(tuple(PathGlob.parse(p) for p in allow), freeze_globs + hide, hide)

    def is_hidden(self, path: str) -> bool:
        return any(g.matches(path) for g in self.hidden)

    def hidden_among(self, paths: Iterable[str]) -> list[str]:
        return sorted(p for p in paths if self.is_hidden(p))

    def is_frozen(self, path: str) -> bool:
        return any(g.matches(path) for g in self.freeze)

    def is_allowed(self, path: str) -> bool:
        return any(g.matches(path) for g in self.allow)

    def violation(self, path: str) -> str | None:
        """Why a change to this workdir-relative path is not allowed, or None when it is."""
        try:
            path = safe_relpath(path)
        except ValueError as exc:
            return str(exc)
        if self.is_frozen(path):
            return f"{path} is frozen"
        if not self.is_allowed(path):
            allowed = ", ".join(g.pattern for g in self.allow)
            return f"{path} is outside the edit surface (allow: {allowed})"
        return None

    def frozen_among(self, paths: Iterable[str]) -> list[str]:
        return sorted(p for p in paths if self.is_frozen(p))

    def allowed_among(self, paths: Iterable[str]) -> list[str]:
        return sorted(p for p in paths if self.is_allowed(p) and not self.is_frozen(p))


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def frozen_changes(root: Path, hashes: dict[str, str]) -> list[str]:
    """Frozen files under root whose content differs from the recorded sha256 (or that vanished)."""
    changed = []
    for rel, expected in sorted(hashes.items()):
        target = root / rel
        if target.is_symlink() or not target.is_file() or sha256_file(target) != expected:
            changed.append(rel)
    return changed
