"""Config files: a TOML config's numbers as a proposed `[search.space]`, the author's step count."""

from __future__ import annotations

import contextlib
import math
import re
import tomllib
from pathlib import Path
from typing import Any

from .command import STEPS_FLAGS
from .folder import is_config, read_head, words

STEP_KEYS = words("steps max_steps num_steps n_steps iters max_iters iterations train_steps total_steps")
SEED_KEYS = ("seed", "random_seed")
FRACTION_WORDS = ("dropout", "smoothing", "frac", "ratio", "prob", "momentum")


def _nice(value: float) -> float:
    return float(f"{value:.3g}")


def search_space(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """A TOML config's numbers and switches as `[search.space]` entries (key -> TOML literal), and
    the keys left out with why. Step and seed keys belong to ARA_STEPS and ARA_SEED."""
    from ..config_file import set_value

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return {}, {}
    space: dict[str, str] = {}
    left: dict[str, str] = {}

    def walk(node: dict[str, Any], prefix: str) -> None:
        for key, value in node.items():
            dotted = f"{prefix}{key}"
            if isinstance(value, dict):
                walk(value, f"{dotted}.")
                continue
            if key.lower() in STEP_KEYS or key.lower() in SEED_KEYS:
                left[dotted] = "ARA_STEPS and ARA_SEED set these"
                continue
            entry = _range(key, value)
            if entry is None:
                left[dotted] = (
                    "give its choices yourself"
                    if isinstance(value, str | list)
                    else ("no range to guess from its value")
                )
                continue
            try:
                set_value(text, dotted, value)
            except ValueError as exc:
                left[dotted] = str(exc)
                continue
            space[dotted] = "{ " + ", ".join(f"{k} = {_literal(v)}" for k, v in entry.items()) + " }"

    walk(data, "")
    return space, left


def _literal(value: Any) -> str:
    from ..config_file import toml_literal

    if isinstance(value, list):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return toml_literal(value)


def _range(key: str, value: Any) -> dict[str, Any] | None:
    if isinstance(value, bool):
        return {"choices": [False, True]}
    if isinstance(value, int):
        return {"choices": sorted({max(1, value // 2), value, value * 2})} if value > 0 else None
    if not isinstance(value, float) or not math.isfinite(value) or value < 0:
        return None
    if any(word in key.lower() for word in FRACTION_WORDS) and value < 1:
        return {"low": 0.0, "high": _nice(min(0.9, max(0.3, 3 * value)))}
    if value == 0:
        return None
    return {"low": _nice(value / 10), "high": _nice(value * 10), "log": True}


def config_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and is_config(p.name))


def propose_search(directory: Path, reads: list[str] | None = None) -> dict[str, Any] | None:
    """The TOML config worth a `[search.space]` (one the code read, with the most proposals)."""
    best = None
    for name in config_files(directory):
        if not name.endswith(".toml") or (reads is not None and name not in reads):
            continue
        space, left = search_space(read_head(directory / name))
        if space and (best is None or len(space) > len(best["space"])):
            best = {"file": name, "space": space, "left_out": left}
    return best


def default_steps(directory: Path, script: str | None) -> tuple[int, str] | None:
    """The step count the code's author chose: a config's `steps`-like key, or the default of the
    script's step flag."""
    for name in config_files(directory):
        if not name.endswith(".toml"):
            continue
        with contextlib.suppress(tomllib.TOMLDecodeError):
            data = tomllib.loads(read_head(directory / name))
            for key, value in data.items():
                if (
                    key.lower() in STEP_KEYS
                    and isinstance(value, int)
                    and not isinstance(value, bool)
                    and value > 0
                ):
                    return value, f"{name}'s `{key}`"
    if script:
        text = read_head(directory / script)
        for flag in STEPS_FLAGS:
            m = re.search(rf"""["']{re.escape(flag)}["'][^)]*?default\s*=\s*(\d+)""", text, re.S)
            if m:
                return int(m.group(1)), f"the default of {script}'s {flag}"
    return None
