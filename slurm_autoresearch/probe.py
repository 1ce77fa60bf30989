"""The probe: what a training command really does, from a few short runs in a scratch copy.

The readers come first and touch nothing (which command to run, the metrics an output holds, the
step lines, the numbers of a config file, the verdicts); `run_probe` then runs the trial runner
itself on copies of the folder, so every run gets a trial's environment, room and metric parsing.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

PROBE_FILE = "probe.json"
SCHEMA = 1


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


SKIP_DIRS = _words(
    ".git .ara __pycache__ .venv venv wandb node_modules .ipynb_checkpoints .mypy_cache .pytest_cache "
    ".ruff_cache .tox .eggs"
)
BIG_FILE = 64 * 2**20  # larger files are linked into the scratch copy, not copied
COPY_LIMIT = 512 * 2**20  # and every file once this much is copied
DATA_SUFFIXES = _words(
    ".npz .npy .csv .tsv .pt .pth .json .jsonl .txt .parquet .arrow .h5 .hdf5 .pkl .pickle .bin .tar .gz "
    ".zip .feather .tfrecord .safetensors .ckpt .mat .idx .png .jpg .wav"
)
DATA_DIRS = ("data", "datasets", "dataset")
NOT_DATA = _words("requirements.txt license.txt package.json tsconfig.json predictions.json")
CONFIG_SUFFIXES = (".toml", ".yaml", ".yml", ".json")
NOT_CONFIG = _words("task.toml pyproject.toml package.json tsconfig.json environment.yml")
# Scripts that judge or make the data rather than train: frozen, never the command.
EVAL_SCRIPT = re.compile(r"^(eval|evaluate|evaluation|score|scoring|metrics?|prepare|data)(_\w+)?\.py$")
NOT_COMMAND = re.compile(r"^(setup|conftest|__init__|test_\w+|\w+_test|utils?|common|config)\.py$")
STEPS_FLAGS = _words(
    "--steps --max-steps --max_steps --num-steps --num_steps --iters --max-iters --max_iters --iterations "
    "--num-iterations --train-steps --train_steps --total-steps --total_steps --n-steps --n_steps"
)
SEED_FLAGS = ("--seed", "--random-seed", "--random_seed")
STEP_KEYS = _words("steps max_steps num_steps n_steps iters max_iters iterations train_steps total_steps")
SEED_KEYS = ("seed", "random_seed")
FRACTION_WORDS = ("dropout", "smoothing", "frac", "ratio", "prob", "momentum")
# What a name says about its goal: tokens of the name that start with one of these.
MIN_WORDS = _words("loss err bpb bpc ppl perplexity mse mae rmse wer cer nll fid")
MAX_WORDS = _words(
    "acc f1 auc score map iou dice bleu rouge r2 precision recall reward return ndcg mrr psnr ssim"
)
HELD_OUT = ("val", "valid", "validation", "test", "eval", "dev", "holdout")
NOT_METRICS = _words(
    "step steps epoch epochs iter iters iteration it time elapsed seconds sec s ms lr learning_rate seed "
    "batch bs gpu rank trained took"
)

_NUM = r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?"
_PRINTED = re.compile(
    rf"(?<![\w./-])(?P<key>[A-Za-z][\w./-]*?)(?P<sep>\s*[=:]\s*|\s+)(?P<num>{_NUM})(?![\w.])"
)
_WORD_BEFORE = re.compile(r"(?<![\w./-])(?P<word>[A-Za-z][A-Za-z_]*)\s+$")
_STEP_LINE = re.compile(r"\b(?:step|iter|iteration)\b[\s=:#]*(\d+)", re.I)
_PATTERN_NUMBER = r"([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)"
_README_USAGE = re.compile(r"^\s*(?:\$\s*)?(python3?|bash|sh)\s+(\S+\.(?:py|sh))\b(.*)$")
_ARGUMENT = re.compile(
    r"""(?:add_argument|click\.option)\(\s*["'](--[\w-]+)["']((?:\s*,\s*["']--?[\w-]+["'])*)"""
)


# -- choosing the command -------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    command: str
    script: str
    score: int
    why: str


def _read(path: Path, limit: int = 1 << 20) -> str:
    try:
        with path.open("rb") as fh:
            return fh.read(limit).decode("utf-8", errors="replace")
    except OSError:
        return ""


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
        for line in _read(readme).splitlines():
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
    texts = {s: _read(directory / s) for s in scripts}
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


# -- reading what a run printed -------------------------------------------------------------------


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if not line.startswith("[ara] ")]


def printed_metrics(text: str) -> dict[str, dict[str, Any]]:
    """Numbers printed as `name=value`, `name: value` or `name value` (`test loss 2.19` is
    test_loss), each with its last value, the line and a `[metric] pattern` that reads it."""
    found: dict[str, dict[str, Any]] = {}
    for line in lines_of(text):
        for m in _PRINTED.finditer(line):
            key, sep = m.group("key"), m.group("sep")
            name, literal = key, re.escape(key)
            if not sep.strip():
                before = _WORD_BEFORE.search(line[: m.start()])
                if before and before.group("word").lower() not in NOT_METRICS:
                    name = f"{before.group('word')}_{key}"
                    literal = rf"{re.escape(before.group('word'))}\s+{re.escape(key)}"
                between = r"\s+"
            else:
                between = rf"\s*{re.escape(sep.strip())}\s*"
            try:
                value = float(m.group("num"))
            except ValueError:
                continue
            if not re.fullmatch(r"[A-Za-z0-9_./-]+", name):
                continue
            found.pop(name, None)  # insertion order: last printed last
            found[name] = {
                "value": value,
                "line": line.strip()[:200],
                "pattern": rf"\b{literal}{between}{_PATTERN_NUMBER}",
            }
    return found


def last_step(text: str) -> int | None:
    steps = [int(m.group(1)) for line in lines_of(text) for m in _STEP_LINE.finditer(line)]
    return max(steps) if steps else None


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[_./-]+", name.lower()) if t]


def rank(name: str) -> int:
    """How much a name looks like the metric to optimise: negative for steps, times and rates."""
    tokens = _tokens(name)
    if name.lower() in NOT_METRICS or (tokens and tokens[-1] in NOT_METRICS):
        return -1
    score = 0
    if any(t in HELD_OUT for t in tokens):
        score += 3
    if any(t.startswith(MIN_WORDS + MAX_WORDS) for t in tokens):
        score += 2
    return score


def guess_goal(name: str) -> tuple[str, bool]:
    """("min" or "max", whether the name says so)."""
    tokens = _tokens(name)
    if any(t.startswith(MIN_WORDS) for t in tokens):
        return "min", True
    if any(t.startswith(MAX_WORDS) for t in tokens):
        return "max", True
    return "min", False


def metric_choices(
    read: dict[str, float], printed: dict[str, dict[str, Any]], wanted: str | None = None
) -> list[tuple[str, str | None]]:
    """(name, pattern or None), best first: metrics ara reads as they are (metrics file, `---`
    block), in their order; else those the code prints in its own style, read through a pattern,
    the last printed first; only `wanted` when it is given."""
    if wanted:
        if wanted in read:
            return [(wanted, None)]
        return [(wanted, printed[wanted]["pattern"])] if wanted in printed else []
    if read:  # in the order printed (a metrics file's keys may come sorted), best first
        order = [n for n in printed if n in read] + [n for n in read if n not in printed]
        return [(n, None) for n in sorted(order, key=lambda n: (-rank(n), order.index(n)))]
    order = [n for n in printed if rank(n) > 0]
    return [(n, printed[n]["pattern"]) for n in sorted(order, key=lambda n: (-rank(n), -order.index(n)))]


# -- config files ---------------------------------------------------------------------------------


def _nice(value: float) -> float:
    return float(f"{value:.3g}")


def search_space(text: str) -> tuple[dict[str, str], dict[str, str]]:
    """A TOML config's numbers and switches as `[search.space]` entries (key -> TOML literal), and
    the keys left out with why. Step and seed keys belong to ARA_STEPS and ARA_SEED."""
    from .config_file import set_value

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
    from .config_file import toml_literal

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


def is_config(rel: str) -> bool:
    """A settings file beside the code: TOML or YAML, or JSON named like one (config.json)."""
    path = Path(rel)
    if "/" in rel or path.name in NOT_CONFIG or path.suffix not in CONFIG_SUFFIXES:
        return False
    return path.suffix != ".json" or bool(re.search(r"conf|param|setting|hyper", path.name, re.I))


def config_files(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.is_file() and is_config(p.name))


def propose_search(directory: Path, reads: list[str] | None = None) -> dict[str, Any] | None:
    """The TOML config worth a `[search.space]` (one the code read, with the most proposals)."""
    best = None
    for name in config_files(directory):
        if not name.endswith(".toml") or (reads is not None and name not in reads):
            continue
        space, left = search_space(_read(directory / name))
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
            data = tomllib.loads(_read(directory / name))
            for key, value in data.items():
                if (
                    key.lower() in STEP_KEYS
                    and isinstance(value, int)
                    and not isinstance(value, bool)
                    and value > 0
                ):
                    return value, f"{name}'s `{key}`"
    if script:
        text = _read(directory / script)
        for flag in STEPS_FLAGS:
            m = re.search(rf"""["']{re.escape(flag)}["'][^)]*?default\s*=\s*(\d+)""", text, re.S)
            if m:
                return int(m.group(1)), f"the default of {script}'s {flag}"
    return None


# -- the folder: copies, snapshots, reads -----------------------------------------------------


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
            digest.update(rel.encode() + b"\0" + hashlib.sha256(_read(path, 1 << 22).encode()).digest())
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


# -- running --------------------------------------------------------------------------------------


@dataclass
class Setup:
    """What the probe runs and how: the task's settings, or init's guesses."""

    command: str
    eval: str | None = None
    metric: str = ""
    pattern: str | None = None
    steps: int = 10
    timeout_s: float = 120.0
    sandbox: str = "auto"
    bwrap: str = "bwrap"
    network: bool = True
    hide: list[str] | None = None
    writable: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    pass_env: list[str] = field(default_factory=list)
    gpus: int = 0
    cpus: int = 1


@dataclass
class Run:
    label: str
    seed: int
    steps: int
    sandbox: str
    state: str = ""
    reason: str = ""
    elapsed: float = 0.0
    metrics: dict[str, float] = field(default_factory=dict)  # what the runner read
    source: str = ""  # "the command's metrics file", "the evaluation's '---' block", ...
    printed: dict[str, dict[str, Any]] = field(default_factory=dict)
    last_step: int | None = None
    stream: str = ""  # the output the metric is read from (the evaluation's, else the command's)
    log_tail: str = ""

    @property
    def ok(self) -> bool:
        return self.state == "completed"

    def values(self) -> dict[str, float]:
        """The metrics the run reported, to compare runs by (not its step counts or times)."""
        out = {k: v["value"] for k, v in self.printed.items() if rank(k) > 0}
        out.update(self.metrics)
        return out


def _run(
    base: Path,
    scratch: Path,
    setup: Setup,
    label: str,
    seed: int,
    steps: int,
    sandbox: str,
    trace: bool = False,
) -> tuple[Run, dict[str, Any]]:
    from .executors.base import JOB_FILE, JobSpec
    from .executors.runner import EVAL_LOG, EVAL_ROOM, LOG_FILE, METRICS_FILE, OUTCOME_FILE
    from .jobenv import job_environ
    from .outcome import JobState, Outcome
    from .rundir import write_json

    tree = scratch / label
    copy_tree(base, tree)
    run_dir = scratch / "runs" / "probe"
    trial_dir = run_dir / "trials" / label
    trial_dir.mkdir(parents=True)
    spec = JobSpec(
        trial_id=label,
        run_id="probe",
        run_dir=str(run_dir),
        trial_dir=str(trial_dir),
        worktree=str(tree),
        workdir=".",
        command=setup.command,
        eval=setup.eval,
        metric=setup.metric or "-",
        steps=steps,
        time_limit_s=setup.timeout_s,
        gpus=setup.gpus,
        frozen={},
        project="probe",
        env=dict(setup.env),
        seed=seed,
        wandb="off",
        pass_env=list(setup.pass_env),
        sandbox=sandbox,
        bwrap=setup.bwrap,
        network=setup.network,
        hide=setup.hide,
        writable=list(setup.writable),
        cpus=setup.cpus,
        metric_pattern=setup.pattern,
    )
    write_json(trial_dir / JOB_FILE, spec.to_dict())
    before = snapshot(tree)
    if trace:
        for rel in before:
            with contextlib.suppress(OSError):
                os.utime(tree / rel, ns=(0, before[rel][1]), follow_symlinks=False)
    env = job_environ(os.environ, setup.pass_env)
    if setup.gpus:
        from .task import detect_gpus

        env["CUDA_VISIBLE_DEVICES"] = ",".join(map(str, detect_gpus()[: setup.gpus]))
    argv = [sys.executable, "-m", "slurm_autoresearch.executors.runner", str(trial_dir)]
    with (trial_dir / "runner.log").open("ab") as err:
        runner = subprocess.Popen(
            argv, env=env, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    try:
        runner.wait(timeout=setup.timeout_s + 60)  # the runner keeps the time limit; this is a backstop
    except subprocess.TimeoutExpired:
        _end(runner)
    except KeyboardInterrupt:
        _end(runner)
        raise
    outcome = Outcome.read(
        trial_dir / OUTCOME_FILE,
        missing_state=JobState.LOST,
        missing_reason="the runner wrote no outcome (see runner.log)",
    )
    reads: dict[str, int] = {}
    if trace:
        for rel in before:
            with contextlib.suppress(OSError):
                atime = (tree / rel).lstat().st_atime_ns
                if atime > 0:
                    reads[rel] = atime
    after = snapshot(tree)
    log = _read(trial_dir / LOG_FILE, 1 << 22)
    command_out = log.split(f"[ara] $ {setup.eval}  (evaluation", 1)[0] if setup.eval else log
    stream = _read(trial_dir / EVAL_LOG, 1 << 22) if setup.eval else command_out
    boot = trial_dir / EVAL_ROOM / "boot" / "sitecustomize.py"  # written just before the evaluation starts
    run = Run(
        label=label,
        seed=seed,
        steps=steps,
        sandbox=sandbox,
        state=str(outcome.state),
        reason="" if outcome.state is JobState.COMPLETED and not setup.metric else outcome.reason,
        elapsed=outcome.elapsed,
        metrics=dict(outcome.metrics),
        source=_source(setup, (trial_dir / METRICS_FILE).is_file(), bool(outcome.metrics)),
        printed=printed_metrics(stream),
        last_step=last_step(command_out),
        stream=stream[-32768:],
        log_tail=outcome.log_tail,
    )
    if setup.pattern and setup.metric in run.metrics and not _in_block_or_file(run, setup.metric):
        run.source = "[metric] pattern"
    tree_facts = {
        "created": sorted(set(after) - set(before)),
        "changed": sorted(r for r in before if r in after and after[r] != before[r]),
        "deleted": sorted(set(before) - set(after)),
        "reads": reads if trace else None,
        "eval_start": boot.stat().st_mtime_ns if trace and boot.exists() else None,
    }
    return run, tree_facts


def _end(runner: subprocess.Popen[bytes]) -> None:
    """SIGTERM: the runner ends the command's processes (in their own session) before it exits."""
    runner.terminate()
    try:
        runner.wait(timeout=15)
    except subprocess.TimeoutExpired:
        runner.kill()


def _source(setup: Setup, file: bool, found: bool) -> str:
    whose = "the evaluation's" if setup.eval else "the command's"
    return f"{whose} metrics file" if file else (f"{whose} '---' block" if found else "")


def _in_block_or_file(run: Run, name: str) -> bool:
    from .executors.runner import parse_metrics_block

    return run.source.endswith("metrics file") or name in parse_metrics_block(run.stream)


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = set(a) & set(b)
    return bool(keys) and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in keys)


@dataclass
class Findings:
    """What the probe saw; probe.json holds it, task.toml's comments and the verdicts say it."""

    command: str
    eval: str | None
    directory: str
    code: str
    steps: list[int]
    sandbox: str
    runs: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # read as ara reads them (seed 0)
    source: str = ""
    printed: dict[str, dict[str, Any]] = field(default_factory=dict)
    metric: dict[str, Any] | None = None  # name, pattern, goal, goal_sure, value, source
    seed_changes_result: bool | None = None
    repeats_identical: bool | None = None
    stops_at_steps: bool | None = None
    steps_evidence: str = ""
    reads_ara_steps: bool = False
    seconds_per_step: float | None = None
    seconds_per_step_at_most: float | None = None
    startup_seconds: float | None = None
    reads: list[str] | None = None
    read_by_eval_only: list[str] = field(default_factory=list)
    written: list[str] = field(default_factory=list)
    created: list[str] = field(default_factory=list)
    linked: list[str] = field(default_factory=list)
    freeze: list[str] = field(default_factory=list)
    hidden: list[str] = field(default_factory=list)
    config: dict[str, Any] | None = None  # file, space, left_out
    failure: str = ""
    stream: str = ""  # the seed-0 run's metric stream, bounded: what `--check` reads a pattern against
    probed_at: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"schema": SCHEMA, **asdict(self)}

    @property
    def ok(self) -> bool:
        return not self.failure


def run_probe(directory: Path, setup: Setup, *, echo: Any = None) -> Findings:
    """Short runs of the command (and its evaluation) through the trial runner, each in a fresh
    scratch copy of `directory`: seed 0; seed 0 again, outside any sandbox, with reads traced by
    access time; seed 1; then up to three longer runs for the time a step takes."""
    from .sandbox import resolve

    directory = directory.resolve()
    say = echo or (lambda _line: None)
    used, _why = resolve(setup.sandbox, setup.bwrap)
    n = setup.steps
    findings = Findings(
        command=setup.command,
        eval=setup.eval,
        directory=str(directory),
        code=code_hash(directory),
        steps=[n],
        sandbox=used,
        probed_at=time.time(),
    )
    script_text = _read(directory / (script_of(setup.command) or "-"))
    findings.reads_ara_steps = "ARA_STEPS" in setup.command or "ARA_STEPS" in script_text
    scratch = Path(tempfile.mkdtemp(prefix="ara-probe-"))
    try:
        base = scratch / "base"
        findings.linked = copy_tree(directory, base)
        trace = atime_works(scratch)
        runs: list[Run] = []

        def go(
            label: str, seed: int, steps: int, mode: str, traced: bool = False
        ) -> tuple[Run, dict[str, Any]]:
            say(
                f"  run {len(runs) + 1}: ARA_SEED={seed} ARA_STEPS={steps}"
                + (" (no sandbox)" if mode == "none" else "")
            )
            run, facts = _run(base, scratch, setup, label, seed, steps, mode, traced)
            runs.append(run)
            findings.runs.append(
                {k: v for k, v in asdict(run).items() if k not in ("stream", "printed", "log_tail")}
            )
            return run, facts

        first, facts0 = go("seed0", 0, n, used)
        repeat, facts = go("repeat", 0, n, "none", traced=trace)
        if not first.ok and not repeat.ok:
            findings.failure = f"{first.state}: {first.reason or 'see the log'}\n{first.log_tail}"
            findings.stream = first.stream
            return findings
        if not first.ok:
            where = (
                f"in the {used} sandbox but runs without it: it writes or reads outside its folder, and "
                "trials run in the sandbox"
                if used != "none"
                else "once, then ran: it is flaky"
            )
            findings.failure = f"failed {where} ({first.reason})\n{first.log_tail}"
        main = first if first.ok else repeat
        findings.metrics, findings.source, findings.printed = main.metrics, main.source, main.printed
        findings.stream = main.stream
        if first.ok and repeat.ok and first.values():
            findings.repeats_identical = _same(first.values(), repeat.values())
        other, _ = go("seed1", 1, n, used if first.ok else "none")
        if other.ok and main.values():
            findings.seed_changes_result = not _same(main.values(), other.values())
        _timing(findings, main, go, used if first.ok else "none")
        _tree(findings, directory, [facts0, facts], setup)
        findings.config = propose_search(directory, findings.reads)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return findings


def _timing(findings: Findings, short: Run, go: Any, mode: str) -> None:
    """Longer runs until a step's time shows (or can be bounded); whether the command stops at
    ARA_STEPS, from its step lines, else from its time and result."""
    n, t0 = short.steps, short.elapsed
    at_most = max(t0, 0.05) / n  # as if all of the first run's time were steps
    longest = short
    for _ in range(3):
        m = min(max(2 * longest.steps, n + math.ceil(6.0 / at_most)), 16 * longest.steps)
        longer, _facts = go(f"steps{m}", 0, m, mode)
        if not longer.ok:
            break
        longest = longer
        gain = longer.elapsed - t0
        at_most = max(gain + 0.3, 0.3) / (m - n)
        findings.steps.append(m)
        if gain >= 1.0:
            findings.seconds_per_step = round(gain / (m - n), 6)
            break
        honours = longer.last_step is not None and longer.last_step > (short.last_step or 0)
        if not honours and _same(short.values(), longer.values()):
            break  # neither its time nor its result moves: more steps would not show more
    findings.seconds_per_step_at_most = None if findings.seconds_per_step else round(at_most, 6)
    per_step = findings.seconds_per_step or 0.0
    findings.startup_seconds = round(max(0.0, t0 - n * per_step), 3)
    last, m = longest.last_step, longest.steps
    if longest is short:
        findings.steps_evidence = "the longer run failed" if len(findings.runs) > 3 else ""
    elif short.last_step is not None and last is not None:
        findings.stops_at_steps = short.last_step <= n and short.last_step < last <= m  # more steps, further
        findings.steps_evidence = f"last step line {short.last_step} at ARA_STEPS={n}, {last} at {m}"
    elif findings.seconds_per_step or not _same(short.values(), longest.values()):
        findings.stops_at_steps = True
        findings.steps_evidence = f"its time or result changes between ARA_STEPS={n} and {m}"
    else:
        findings.stops_at_steps = False
        findings.steps_evidence = f"neither its time nor its result changes between ARA_STEPS={n} and {m}"


def _tree(findings: Findings, directory: Path, facts: list[dict[str, Any]], setup: Setup) -> None:
    """Reads, writes, freeze and hidden candidates from the first two runs' folders."""
    written = set()
    created = set()
    for f in facts:
        written |= set(f["changed"]) | set(f["deleted"])
        created |= {r for r in f["created"] if "__pycache__" not in r}
    findings.written, findings.created = sorted(written), sorted(created)
    traced = next((f for f in facts if f["reads"] is not None), None)
    reads = traced["reads"] if traced else None
    eval_start = traced["eval_start"] if traced else None
    findings.reads = sorted(reads) if reads is not None else None
    if reads is not None and eval_start is not None:
        findings.read_by_eval_only = sorted(r for r, t in reads.items() if t >= eval_start and is_data(r))
    evaluator = script_of(setup.eval)
    names = [rel for rel in walk_files(directory) if rel not in written]
    freeze = []
    for rel in names:
        name = Path(rel).name
        script = "/" not in rel and (EVAL_SCRIPT.match(name) or rel == evaluator)
        data = is_data(rel) and (reads is None or rel in reads)
        if (script or data) and rel not in findings.read_by_eval_only and name not in ("task.toml",):
            freeze.append(rel)
    findings.freeze = freeze
    findings.hidden = list(findings.read_by_eval_only) if setup.eval else []


def conclude(findings: Findings, wanted: str | None = None, pattern: str | None = None) -> None:
    """The metric the task should name: the one asked for (with its pattern), else the best seen;
    a pattern counts only when it reads back the value it was made from."""
    from .executors.runner import pattern_metric

    findings.metric = None
    if pattern and wanted:
        value = findings.metrics.get(wanted)
        findings.metric = {"name": wanted, "pattern": pattern, "value": value, "source": "[metric] pattern"}
    choices = [] if findings.metric else metric_choices(findings.metrics, findings.printed, wanted)
    for name, found in choices:
        if found is None:
            findings.metric = {
                "name": name,
                "pattern": None,
                "value": findings.metrics[name],
                "source": findings.source,
            }
            break
        printed = findings.printed[name]
        if pattern_metric(findings.stream, found) == printed["value"]:
            source = f"printed as `{printed['line']}`"
            findings.metric = {"name": name, "pattern": found, "value": printed["value"], "source": source}
            break
    if findings.metric is None and wanted:
        findings.metric = {"name": wanted, "pattern": None, "value": None, "source": "not seen"}
    if findings.metric is not None:
        goal, sure = guess_goal(findings.metric["name"])
        findings.metric.update(goal=goal, goal_sure=sure)


# -- the verdicts, probe.json, and --check ------------------------------------------------------


def ms(seconds: float) -> str:
    """A duration in words a person reads: 2.4 s, 96 ms, 1.4 ms, 7.6 us."""
    if seconds >= 1:
        return f"{seconds:.1f} s"
    if seconds >= 0.01:
        return f"{seconds * 1000:.0f} ms"
    return f"{seconds * 1000:.2g} ms" if seconds >= 1e-5 else f"{seconds * 1e6:.2g} us"


def trial_seconds(findings: Findings, steps: int) -> float | None:
    per = findings.seconds_per_step or findings.seconds_per_step_at_most
    if per is None or findings.startup_seconds is None:
        return None
    return findings.startup_seconds + steps * per


NO_SEED = "ARA_SEED changes nothing: noise cannot be measured, keeps are single-run"


def verdicts(
    findings: Findings, steps: int | None = None, minutes: float | None = None
) -> list[tuple[str, str]]:
    """(level, line) per finding: ok, note, WARN or FAIL."""
    out: list[tuple[str, str]] = []
    if findings.failure:
        first, *log = findings.failure.splitlines()
        out.append(("FAIL", first if findings.metrics else f"the command failed: {first}"))
        out += [("log", line) for line in [x for x in lines_of("\n".join(log)) if x.strip()][-4:]]
        if not findings.metrics:
            return out
    metric = findings.metric
    seen = ", ".join(list(findings.metrics) + [n for n in findings.printed if rank(n) > 0][:8]) or "nothing"
    if metric is None:
        out.append(
            (
                "FAIL",
                f"no metric ara can read (seen: {seen}): print a '---' block, write "
                "ARA_METRICS_PATH, or set [metric] pattern",
            )
        )
    elif metric.get("value") is None:
        out.append(("FAIL", f"metric {metric['name']!r} is not in what the runs reported (seen: {seen})"))
    else:
        how = f" through [metric] pattern '{metric['pattern']}'" if metric.get("pattern") else ""
        others = [n for n in findings.metrics if n != metric["name"]]
        also = f" (also: {', '.join(others)})" if others else ""
        where = f"in {metric['source']}" if metric["source"].startswith("the ") else metric["source"]
        out.append(("ok", f"metric {metric['name']} = {metric['value']:.6g}, {where}{how}{also}"))
    if findings.seed_changes_result is False:
        out.append(("WARN", f"{NO_SEED}; seed your RNGs from ARA_SEED"))
    elif findings.seed_changes_result:
        rep = {
            True: "the same seed repeats it exactly",
            False: "the same seed does NOT repeat it (nondeterministic)",
            None: "repeat unknown",
        }[findings.repeats_identical]
        out.append(("ok", f"ARA_SEED changes the result; {rep}"))
    if findings.stops_at_steps is False:
        out.append(("WARN", f"does not stop at ARA_STEPS ({findings.steps_evidence}): pass it to the code"))
    elif findings.stops_at_steps:
        out.append(("ok", f"stops at ARA_STEPS ({findings.steps_evidence})"))
    if findings.seconds_per_step:
        out.append(
            (
                "ok",
                f"a step takes about {ms(findings.seconds_per_step)} after "
                f"{ms(findings.startup_seconds or 0)} of start-up",
            )
        )
    elif findings.seconds_per_step_at_most:
        out.append(
            (
                "note",
                f"a step takes under {ms(findings.seconds_per_step_at_most)}; start-up about "
                f"{ms(findings.startup_seconds or 0)}",
            )
        )
    if steps and minutes:
        expect = trial_seconds(findings, steps)
        if expect is not None and expect > minutes * 60 * 0.8:
            out.append(
                (
                    "WARN",
                    f"{steps} steps should take about {ms(expect)}: over [budget] trial_minutes = "
                    f"{minutes:g}",
                )
            )
    if findings.freeze:
        out.append(("ok", f"read and never written: {', '.join(findings.freeze)} (freeze)"))
    if findings.hidden:
        out.append(
            ("note", f"read only by the evaluation: {', '.join(findings.hidden)} (hidden: an answer key?)")
        )
    if findings.created:
        out.append(
            (
                "note",
                f"writes {', '.join(findings.created[:6])}" + (" ..." if len(findings.created) > 6 else ""),
            )
        )
    if findings.reads is None:
        out.append(("note", "reads not traced (access times do not move on this filesystem)"))
    if findings.config:
        out.append(
            (
                "ok",
                f"{findings.config['file']}: {len(findings.config['space'])} values proposed as "
                "[search.space]",
            )
        )
    return out


def probe_path(root: Path) -> Path:
    return root / PROBE_FILE


def write_findings(root: Path, findings: Findings) -> Path:
    from .rundir import write_json

    root.mkdir(parents=True, exist_ok=True)
    ignore = root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("*\n", encoding="utf-8")  # as a run root: never in the user's `git status`
    write_json(probe_path(root), findings.to_dict())
    return probe_path(root)


def read_findings(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(probe_path(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("schema") == SCHEMA else None


def metric_problem(
    data: dict[str, Any], command: str, evaluation: str | None, metric: str, pattern: str | None, code: str
) -> str | None:
    """Why the task's metric is not among what the probe of the same command and code saw; None
    when it is, or when the probe was of something else."""
    if data.get("command") != command or data.get("eval") != evaluation or data.get("code") != code:
        return None
    if data.get("failure") and not data.get("metrics") and not data.get("printed"):
        return None  # the run failed: nothing to compare with (the probe said so)
    probed, where = f"the probe of {command!r}", f".ara/{PROBE_FILE}"
    if pattern:
        from .executors.runner import pattern_metric

        if pattern_metric(data.get("stream", ""), pattern) is None:
            return f"[metric] pattern {pattern!r} matches nothing in what {probed} printed ({where})"
        return None
    if metric in (data.get("metrics") or {}):
        return None
    printed = (data.get("printed") or {}).get(metric)
    if printed:
        return (
            f"[metric] name {metric!r} is printed as `{printed['line']}`, which trials do not read; "
            f"add [metric] pattern = '{printed['pattern']}' (from {probed}, {where})"
        )
    seen = ", ".join(list(data.get("metrics") or {}) + [n for n in data.get("printed") or {} if rank(n) > 0])
    return (
        f"[metric] name {metric!r} was never seen by {probed} (it saw: {seen or 'no metric'}; {where}); "
        "fix the name, or probe again with `ara doctor` after changing the code"
    )


# -- a task's own probe (`ara doctor`) and its check (`ara submit --check`) -----------------------


def read_task(path: Path) -> tuple[Any, Path, Path]:
    """(spec, workdir, run root) of a task file, schema-checked only: `ara doctor` looks at a task
    that may not pass `--check` yet."""
    from pydantic import ValidationError

    from .errors import TaskError
    from .spec import TaskSpec, format_validation_error
    from .workspace import repo_toplevel

    try:
        spec = TaskSpec.model_validate(tomllib.loads(path.read_text(encoding="utf-8")))
    except OSError as exc:
        raise TaskError(f"{path}: cannot read it: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"{path}: not valid TOML: {exc}") from None
    except ValidationError as exc:
        raise TaskError(format_validation_error(str(path), exc)) from None
    task_dir = path.resolve().parent
    repo = (task_dir / spec.task.repo).resolve() if spec.task.repo else repo_toplevel(task_dir) or task_dir
    workdir = (repo / spec.task.workdir).resolve() if spec.task.workdir else task_dir
    if not workdir.is_dir():
        raise TaskError(f"{path}: [task] workdir: {workdir} is not a directory")
    return spec, workdir, task_dir / spec.run.root


def task_setup(spec: Any, steps: int, timeout_s: float) -> Setup:
    """The probe of a task as its trials run: its command, evaluation, metric, environment, room."""
    return Setup(
        command=spec.task.command,
        eval=spec.task.eval,
        metric=spec.metric.name,
        pattern=spec.metric.pattern,
        steps=steps,
        timeout_s=timeout_s,
        sandbox=spec.sandbox.mode,
        bwrap=spec.sandbox.bwrap,
        network=spec.sandbox.network,
        hide=spec.sandbox.hide,
        writable=list(spec.sandbox.writable),
        env=dict(spec.task.env),
        pass_env=list(spec.task.pass_env),
        gpus=spec.resources.gpus_per_trial,
        cpus=spec.resources.cpus_per_trial,
    )


def doctor(
    spec: Any, workdir: Path, root: Path, *, steps: int, timeout_s: float, echo: Any = None
) -> tuple[Findings, list[tuple[str, str]]]:
    """Probe a task's command and say, per finding, whether the task fits what the code does."""
    from .surface import EditSurface

    findings = run_probe(workdir, task_setup(spec, steps, timeout_s), echo=echo)
    conclude(findings, wanted=spec.metric.name, pattern=spec.metric.pattern)
    found = verdicts(findings, spec.budget.steps, spec.budget.trial_minutes)
    problem = metric_problem(
        findings.to_dict(),
        spec.task.command,
        spec.task.eval,
        spec.metric.name,
        spec.metric.pattern,
        findings.code,
    )
    if problem:
        found = [v for v in found if not v[1].startswith("metric ")]
        found.insert(0, ("FAIL", problem))
    # The generic lines about files and configs become lines about this task's surface and search.
    generic = ("read and never written", "read only by", f"{(findings.config or {}).get('file')}: ")
    found = [v for v in found if not v[1].startswith(generic)]
    surface = EditSurface.parse(spec.surface.allow, spec.surface.freeze, spec.surface.hidden)
    loose = [rel for rel in findings.freeze if not surface.is_frozen(rel)]
    if loose:
        found.append(("WARN", f"read and never written, but not in [surface] freeze: {', '.join(loose)}"))
    elif findings.freeze:
        found.append(("ok", f"frozen, and read and never written: {', '.join(findings.freeze)}"))
    unseen = [rel for rel in findings.hidden if not surface.is_hidden(rel)]
    if unseen:
        found.append(("note", f"read only by the evaluation, not [surface] hidden: {', '.join(unseen)}"))
    elif findings.hidden:
        found.append(("ok", f"hidden, and read only by the evaluation: {', '.join(findings.hidden)}"))
    if findings.config and not spec.search.config:
        space = len(findings.config["space"])
        found.append(
            ("note", f"{findings.config['file']} has {space} values for a [search.space]; none is set")
        )
    write_findings(root, findings)
    return findings, found


def task_problem(spec: Any, task_path: Path, workdir: Path) -> str | None:
    """`--check`: the task's metric against what the latest probe of the same command saw."""
    data = read_findings(task_path.parent / spec.run.root)
    if data is None:
        return None
    return metric_problem(
        data, spec.task.command, spec.task.eval, spec.metric.name, spec.metric.pattern, code_hash(workdir)
    )
