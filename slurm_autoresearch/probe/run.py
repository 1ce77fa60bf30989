"""Running the probe: short runs of the command through the trial runner in scratch copies."""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .command import EVAL_SCRIPT, script_of
from .config import propose_search
from .findings import Findings
from .folder import atime_works, code_hash, copy_tree, is_data, read_head, snapshot, walk_files
from .output import last_step, printed_metrics, rank


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
    from ..executors.base import JOB_FILE, JobSpec
    from ..jobenv import job_environ
    from ..outcome import JobState, Outcome
    from ..rundir import EVAL_LOG, EVAL_ROOM, LOG_FILE, METRICS_FILE, OUTCOME_FILE, write_json

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
        from ..task import detect_gpus

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
    log = read_head(trial_dir / LOG_FILE, 1 << 22)
    command_out = log.split(f"[ara] $ {setup.eval}  (evaluation", 1)[0] if setup.eval else log
    stream = read_head(trial_dir / EVAL_LOG, 1 << 22) if setup.eval else command_out
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
    from ..metrics import parse_metrics_block

    return run.source.endswith("metrics file") or name in parse_metrics_block(run.stream)


def _same(a: dict[str, float], b: dict[str, float]) -> bool:
    keys = set(a) & set(b)
    return bool(keys) and all(a[k] == b[k] or (math.isnan(a[k]) and math.isnan(b[k])) for k in keys)


def run_probe(directory: Path, setup: Setup, *, echo: Any = None) -> Findings:
    """Short runs of the command (and its evaluation) through the trial runner, each in a fresh
    scratch copy of `directory`: seed 0; seed 0 again, outside any sandbox, with reads traced by
    access time; seed 1; then up to three longer runs for the time a step takes."""
    from ..executors.sandbox import resolve

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
    script_text = read_head(directory / (script_of(setup.command) or "-"))
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
