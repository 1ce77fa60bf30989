"""Choosing the command: the scripts a folder offers, what a README runs, the flags they take."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from .folder import read_head, words

# Scripts that judge or make the data rather than train: frozen, never the command.
EVAL_SCRIPT = re.compile(r"^(eval|evaluate|evaluation|score|scoring|metrics?|prepare|data)(_\w+)?\.py$")
NOT_COMMAND = re.compile(r"^(setup|conftest|__init__|test_\w+|\w+_test|utils?|common|config)\.py$")
STEPS_FLAGS = words(
    "--steps --max-steps --max_steps --num-steps --num_steps --iters --max-iters --max_iters --iterations "
    "--num-iterations --train-steps --train_steps --total-steps --total_steps --n-steps --n_steps"
)
SEED_FLAGS = ("--seed", "--random-seed", "--random_seed")


_README_USAGE = re.compile(r"^\s*(?:\$\s*)?(python3?|bash|sh)\s+(\S+\.(?:py|sh))\b(.*)$")
_ARGUMENT = re.compile(
    r"""(?:add_argument|click\.option)\(\s*["'](--[\w-]+)["']((?:\s*,\s*["']--?[\w-]+["'])*)"""
)


@dataclass(frozen=True)
class Candidate:
    command: str
    script: str
    score: int
    why: str


def _flags(text: str) -> list[str]:
    """Long options an argparse or click script declares (with their aliases)."""
    found = []
    for m in _ARGUMENT.finditer(text):
        found.append(m.group(1))
        found += re.findall(r"--[\w-]+", m.group(2))
    return found


def _readme_usage(directory: Path) -> dict[str, str]:
    """script -> the arguments a README's usage line gives it (`python train.py --data x`)."""
    usage: dict[str, str] = {}
    for readme in sorted(directory.glob("README*")):
        for line in read_head(readme).splitlines():
            m = _README_USAGE.match(line.strip("`"))
            if m and m.group(2) not in usage and "--help" not in m.group(3):
                usage[m.group(2)] = m.group(3).strip().rstrip("`").strip()
    return usage


def _without_flags(args: str, flags: tuple[str, ...]) -> str:
    """A README's arguments, up to a shell operator, less the step and seed flags the command sets
    itself."""
    try:
        words = shlex.split(args)
    except ValueError:
        return ""
    out, skip = [], False
    for word in words:
        if word in ("&&", "||", ";", "|", ">", ">>", "&", "2>&1") or word.startswith(("#", ">")):
            break
        if skip:
            skip = False
            continue
        name = word.split("=", 1)[0]
        if name in flags:
            skip = "=" not in word
            continue
        out.append(word)
    return shlex.join(out)


def candidates(directory: Path) -> list[Candidate]:
    """The commands the folder offers, best first: scripts that read ARA_STEPS or take a step flag,
    wrappers beside the script they run, what a README's usage line runs."""
    scripts = sorted(p.name for p in directory.iterdir() if p.is_file() and p.suffix in (".py", ".sh"))
    scripts = [s for s in scripts if not NOT_COMMAND.match(s) and not EVAL_SCRIPT.match(s)]
    usage = _readme_usage(directory)
    texts = {s: read_head(directory / s) for s in scripts}
    found = []
    for script in scripts:
        text, score, why = texts[script], 0, []
        stem = Path(script).stem
        args: list[str] = []
        if "ARA_STEPS" in text:
            score += 10
            why.append("reads ARA_STEPS" + (" and ARA_SEED" if "ARA_SEED" in text else ""))
        else:
            flags = _flags(text)
            step_flag = next((f for f in STEPS_FLAGS if f in flags), None)
            if step_flag:
                score += 6
                args.append(f'{step_flag} "$ARA_STEPS"')
                seed_flag = next((f for f in SEED_FLAGS if f in flags), None)
                if seed_flag and "ARA_SEED" not in text:
                    args.append(f'{seed_flag} "$ARA_SEED"')
                why.append(f"takes {step_flag}" + (f" and {seed_flag}" if seed_flag else ""))
        if "ARA_SEED" in text and "ARA_STEPS" not in text:
            score += 2
            why.append("reads ARA_SEED")
        wrapped = [
            other
            for other in scripts
            if other != script
            and (
                other in text
                or re.search(rf"^\s*(from|import)\s+{re.escape(Path(other).stem)}\b", text, re.M)
            )
        ]
        if wrapped and re.match(r"^(run|wrap|launch)|_(run|wrapper|wrap)$", stem):
            score += 3
            why.append(f"wraps {wrapped[0]}")
        if script in usage:
            score += 3
            why.append("the README's usage line")
        if stem.startswith("train"):
            score += 3
        elif stem in ("main", "run"):
            score += 1
        if "__main__" in text:
            score += 1
        program = "bash" if script.endswith(".sh") else "python"
        readme_args = _without_flags(usage.get(script, ""), STEPS_FLAGS + SEED_FLAGS)
        command = " ".join([program, script, *([readme_args] if readme_args else []), *args])
        found.append(Candidate(command, script, score, ", ".join(why)))
    return sorted(found, key=lambda c: (-c.score, c.script))


def evaluation_script(directory: Path) -> str | None:
    for name in ("evaluate.py", "eval.py"):
        if (directory / name).is_file():
            return name
    return None


def script_of(command: str | None) -> str | None:
    """The script a command runs (`python train.py --x` -> train.py)."""
    if not command:
        return None
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    return next((w for w in words if w.endswith((".py", ".sh")) and not w.startswith("-")), None)
