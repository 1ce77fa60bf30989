"""Path globs and path safety: real path semantics, not fnmatch's."""

from __future__ import annotations

import fnmatch

import pytest

from slurm_autoresearch.surface import EditSurface, PathGlob, safe_relpath


@pytest.mark.parametrize(
    ("pattern", "path", "expected"),
    [
        ("configs/*.toml", "configs/a.toml", True),
        ("configs/*.toml", "configs/sub/x.toml", False),
        ("*.py", "train.py", True),
        ("*.py", "pkg/train.py", False),
        ("**/*.py", "train.py", True),
        ("**/*.py", "a/b/c.py", True),
        ("src/**", "src/a/b.py", True),
        ("src/**", "src", False),
        ("src/**/model.py", "src/model.py", True),
        ("src/**/model.py", "src/x/y/model.py", True),
        ("t?ain.py", "train.py", True),
        ("t?ain.py", "t/ain.py", False),
        ("[ab].py", "a.py", True),
        ("[!ab].py", "a.py", False),
        ("[!ab].py", "c.py", True),
        ("a.py", "a_py", False),
    ],
)
def test_glob_matches_whole_paths(pattern: str, path: str, expected: bool) -> None:
    assert PathGlob.parse(pattern).matches(path) is expected


def test_fnmatch_would_have_been_wrong() -> None:
    # Why we do not use fnmatch: its `*` crosses directories.
    assert fnmatch.fnmatch("configs/sub/x.toml", "configs/*.toml")
    assert not PathGlob.parse("configs/*.toml").matches("configs/sub/x.toml")


@pytest.mark.parametrize("bad", ["", "/etc/*", "../x", "a/../../b", "x[", "a**", ".git/config", "dir/"])
def test_bad_globs_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        PathGlob.parse(bad)


@pytest.mark.parametrize(
    "bad", ["", "/abs", "~/x", "../x", "a/../../x", "a\\b", ".git/config", "sub/.GIT/hooks/x", "C:/x"]
)
def test_unsafe_paths_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        safe_relpath(bad)


def test_safe_paths_are_normalized() -> None:
    assert safe_relpath("./src//model.py") == "src/model.py"


def test_surface_violation_names_the_rule() -> None:
    surface = EditSurface.parse(["*.py", "configs/*.toml"], ["evaluate.py"])
    assert surface.violation("train.py") is None
    assert "frozen" in (surface.violation("evaluate.py") or "")
    assert "outside the edit surface" in (surface.violation("configs/sub/x.toml") or "")
    assert "climbs out" in (surface.violation("../train.py") or "")
