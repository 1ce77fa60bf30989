"""`ara`: a thin click CLI over the library; parse, call, print.

Over 400 lines: one thin function per `ara` command, with the click options and help text that
are the CLI's own documentation. Each imports what it calls inside itself, so `ara status` loads
only the read side; split across modules, the commands would be harder to find, not shorter.
"""

from __future__ import annotations

import contextlib
import json
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from .errors import AraError, UsageError

if TYPE_CHECKING:
    from .rundir import RunDir
    from .task import Task
    from .trial import Trial

root_option = click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run root holding runs/ (default: $ARA_ROOT, else .ara in this directory or a parent).",
)


class AraGroup(click.Group):
    """Turns AraError into a one-line message and its exit code (2 for task and usage errors)."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except AraError as exc:
            click.echo(f"ara: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


@click.group(cls=AraGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slurm-autoresearch", prog_name="ara")
def main() -> None:
    """ara: autonomous ML experimentation on Slurm clusters.

    A planner proposes hypotheses about your training code, each becomes a git commit inside a
    fixed edit surface, runs as a job, and is kept or discarded on the metric of a frozen
    evaluation. Start with `ara init`, then `ara submit task.toml`.
    """


probe_steps = click.option(
    "--steps", type=click.IntRange(min=1), default=10, show_default=True, help="ARA_STEPS of the short runs."
)
probe_timeout = click.option(
    "--timeout", type=click.FloatRange(min=1), default=120.0, show_default=True, help="Seconds per run."
)


def _say_verdicts(found: list[tuple[str, str]]) -> None:
    colors = {"FAIL": "red", "WARN": "yellow"}
    for level, line in found:  # "log": a line of a failed run's log, under its FAIL
        shown = f"        {_screen(line)}" if level == "log" else f"  {level:<5} {_screen(line)}"
        click.secho(shown, fg=colors.get(level), bold=level in colors)


@main.command()
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=".")
@click.option("--name", help="Task name (default: the directory's name).")
@click.option(
    "--command",
    "command",
    default=None,
    help="Training command (default: what the folder offers: a script that reads ARA_STEPS or takes a "
    "--steps flag, a wrapper beside it, a README's usage line).",
)
@click.option("--metric", default=None, help="Metric name (default: what the probe saw, else a guess).")
@click.option(
    "--goal", type=click.Choice(["min", "max"]), default=None, help="Default: from the metric's name."
)
@click.option(
    "--probe/--no-probe",
    "probe",
    default=None,
    help="Run the command a few times briefly in a scratch copy and write what it does (asked on a "
    "terminal; elsewhere nothing runs without --probe).",
)
@probe_steps
@probe_timeout
@click.option("--force", is_flag=True, help="Overwrite an existing task.toml.")
def init(
    directory: Path,
    name: str | None,
    command: str | None,
    metric: str | None,
    goal: str | None,
    probe: bool | None,
    steps: int,
    timeout: float,
    force: bool,
) -> None:
    """Write task.toml and playbook.md next to your training code; with --probe, from what a few
    short runs of its command show (metrics, seeds, steps, time, files it reads)."""
    from .probe import verdicts
    from .probe.scaffold import plan, run_probe, write_scaffold

    task_plan = plan(directory, command, force)
    runs = f"`{task_plan.command}`" + (f" then `{task_plan.eval}`" if task_plan.eval else "")
    if probe is None:
        probe = sys.stdin.isatty() and click.confirm(
            f"Run {runs} a few times briefly (ARA_STEPS={steps}, in a scratch copy) to see what it does?",
            default=True,
        )
    findings = None
    if probe:
        click.echo(f"probing {runs} in scratch copies of {task_plan.directory}:")
        findings = run_probe(task_plan, steps, timeout, metric, click.echo)
        _say_verdicts(verdicts(findings))
    for path in write_scaffold(task_plan, name=name, metric=metric, goal=goal, findings=findings):
        click.echo(f"wrote {path}")
    task = directory / "task.toml"
    if not probe:
        click.echo(f"nothing was run: guessed from the files; `ara doctor {task}` runs the command briefly")
    click.echo(
        f"next: check the CONFIRM comments in {task}, commit, then `ara submit {task} --check`, "
        f"then `ara submit {task}` (runs `{task_plan.command}`)"
    )


@main.command()
@click.argument("task_file", type=click.Path(dir_okay=False, path_type=Path))
@probe_steps
@probe_timeout
@click.pass_context
def doctor(ctx: click.Context, task_file: Path, steps: int, timeout: float) -> None:
    """Run the task's command briefly in scratch copies, as trials run it, and say whether the task
    fits what it does: the metric, seeds, ARA_STEPS, a trial's time, the files to freeze. Exits 1
    when something fails; `ara submit --check` then checks the metric against what was seen."""
    from .probe import doctor as probe_task
    from .probe import read_task

    spec, workdir, root = read_task(task_file)
    runs = f"`{spec.task.command}`" + (f" then `{spec.task.eval}`" if spec.task.eval else "")
    click.echo(f"probing {runs} in scratch copies of {workdir}:")
    _findings, found = probe_task(spec, workdir, root, steps=steps, timeout_s=timeout, echo=click.echo)
    _say_verdicts(found)
    click.echo(f"wrote {root / 'probe.json'}")
    if any(level == "FAIL" for level, _ in found):
        ctx.exit(1)


def _screen(text: str) -> str:
    """Text from trials and models as it may reach a terminal: no escape sequence, no control or
    bidi character, shown as `\x1b` and the like (line breaks kept; a lone CR becomes one)."""
    from .safetext import visible

    return visible(text.replace("\r\n", "\n").replace("\r", "\n"))


def _say_protection(rundir: RunDir) -> None:
    """One line on how trial code is contained; loud (stderr, red) when the metric is not protected."""
    from .executors.sandbox import describe
    from .ledger import Ledger

    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        protected, line = describe(ledger.meta().get("sandbox"))
    finally:
        ledger.close()
    if protected:
        click.echo(line)
    else:
        click.secho(f"WARNING: {line}", fg="red", bold=True, err=True)


@main.command()
@click.argument("task_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--check", is_flag=True, help="Validate the task and exit; creates nothing.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="SECTION.KEY=VALUE",
    help="Override a task key for this run, e.g. --set run.executor=slurm (repeatable).",
)
@click.option("--detach", is_flag=True, help="Run the controller in the background; print how to follow it.")
def submit(task_file: Path, check: bool, overrides: tuple[str, ...], detach: bool) -> None:
    """Validate TASK_FILE, start a run and drive it to the end (prints the run id first).

    With [controller] where = "slurm" the controller itself runs as a small Slurm job.
    """
    from .loop.launcher import create_run
    from .loop.preflight import executor_reason, load_task

    task = load_task(task_file, list(overrides))
    spec = task.spec
    click.echo(executor_reason(task), err=True)
    for warning in task.warnings():
        click.secho(f"warning: {warning}", fg="yellow", err=True)
    if check:
        click.echo(
            f"{task_file}: ok: {task.name}, repo {task.repo}, workdir {task.workdir}, "
            f"{spec.budget.trials} trials x {spec.budget.steps} steps, {task.executor} executor, "
            f"{task.planner} planner, {task.summarizer} summarizer"
        )
        from .executors.sandbox import resolve

        used, why = resolve(spec.sandbox.mode, spec.sandbox.bwrap)
        if used == "bwrap":
            click.echo("trial code: bwrap sandbox")
        else:
            click.secho(
                f"WARNING: trial code runs without a sandbox ({why}): the metric is NOT protected",
                fg="red",
                bold=True,
                err=True,
            )
        return
    rundir = create_run(task, time.time())
    click.echo(f"run id: {rundir.run_id}")
    _say_protection(rundir)
    if spec.controller.where == "slurm":
        from .loop.controller_job import submit_controller

        job = submit_controller(rundir, spec)
        click.echo(f"controller: Slurm job {job} (log {rundir.path}/controller-job-{job}.out)")
        _how_to_follow(rundir.run_id)
    elif detach:
        _detach(rundir)
    else:
        _drive(rundir, task)


@main.command()
@click.argument("run")
@click.option("--detach", is_flag=True, help="Resume in the background.")
@root_option
def resume(run: str, detach: bool, root: Path | None) -> None:
    """Carry RUN on after its controller died or was interrupted: re-attach, collect, continue."""
    from .loop.launcher import resumable
    from .rundir import find_run

    rundir = find_run(run, root)
    why_not = resumable(rundir)
    if why_not:
        click.echo(why_not)
        return
    if detach:
        _detach(rundir)
    else:
        _drive(rundir, None)


@main.command()
@click.argument("run")
@click.argument("trial")
@click.option("--steps", type=click.IntRange(min=1), help="Step budget (ARA_STEPS); default: the trial's.")
@click.option(
    "--seeds", type=click.IntRange(1, 50), default=1, show_default=True, help="Runs, each a new seed."
)
@click.option("--detach", is_flag=True, help="For a finished run: run the re-runs in the background.")
@root_option
def rerun(run: str, trial: str, steps: int | None, seeds: int, detach: bool, root: Path | None) -> None:
    """Re-run TRIAL of RUN exactly (its commit, command, resources) with new seeds, maybe longer."""
    from .ledger import Ledger
    from .rundir import find_run

    rundir = find_run(run, root)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        found = ledger.trial(trial)
        state = ledger.meta().get("state")
    finally:
        ledger.close()
    if found is None or found.commit is None or found.job_id is None:
        raise UsageError(
            f"run {rundir.run_id} has no measured trial {trial!r}; see `ara status {rundir.run_id}`"
        )
    holder = rundir.lock_holder()
    live = holder is not None and rundir.holder_alive(holder) is not False
    rundir.request_rerun(found.id, steps, seeds, time.time())
    what = f"{seeds} re-run(s) of {found.id} at {steps or found.steps or 'its'} steps"
    if live:
        assert holder is not None  # live
        click.echo(f"{what} queued for the running controller (pid {holder.get('pid')})")
        _how_to_follow(rundir.run_id)
    elif state != "finished":
        click.echo(f"{what} queued; `ara resume {rundir.run_id}` runs them with the rest of the run")
    elif detach:
        _detach(rundir, "rerun-queued")
    else:
        click.echo(f"{what}: running them now")
        _drive(rundir, None, reruns_only=True)
        click.echo(f"{found.id} at {steps or found.steps or 'its'} steps: {_runs_of(rundir, found, steps)}")


def _runs_of(rundir: RunDir, trial: Trial, steps: int | None) -> str:
    from .evidence import runs_line, values
    from .ledger import Ledger

    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        default = int((ledger.meta().get("rule") or {}).get("steps") or trial.steps or 0)
        runs = values(ledger.trials(light=True), trial.commit, steps or trial.steps or default, default)
    finally:
        ledger.close()
    return runs_line(runs)


@main.command("rerun-queued", hidden=True)
@click.argument("run")
def rerun_queued(run: str) -> None:
    """The background half of `ara rerun --detach`: run a finished run's queued re-runs."""
    from .rundir import find_run

    _drive(find_run(run, None), None, reruns_only=True)


def _how_to_follow(run_id: str) -> None:
    click.echo(f"follow it with `ara status {run_id}`; stop it with `ara stop {run_id}`")


def _detach(rundir: RunDir, command: str = "resume") -> None:
    import subprocess

    log = rundir.path / "controller.out"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "slurm_autoresearch.cli", command, str(rundir.path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    click.echo(f"controller: pid {proc.pid} in the background (log {log})")
    _how_to_follow(rundir.run_id)


def _drive(rundir: RunDir, task: Task | None, *, reruns_only: bool = False) -> None:
    """Run the controller here. First Ctrl-C: plan no more and finish the running trials; a second
    one, SIGTERM or SIGHUP: exit at once, jobs left running and the ledger consistent."""
    from .loop.launcher import open_run

    controller = open_run(rundir, task=task, echo=lambda m: click.echo(f"{time.strftime('%H:%M:%S')} {m}"))
    interrupts = {"n": 0}

    def on_int(signum: int, frame: object) -> None:
        interrupts["n"] += 1
        if interrupts["n"] == 1:
            rundir.request_stop(cancel=False, by="Ctrl-C")
            click.echo(
                "stopping: no new trials, waiting for running ones (Ctrl-C again to exit now, "
                "leaving them running)",
                err=True,
            )
        else:
            _interrupt(signum, frame)

    signal.signal(signal.SIGINT, on_int)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    summary = controller.run(reruns_only=reruns_only)
    if summary.state == "interrupted":
        sys.exit(130)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


@main.command()
@click.argument("run", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the status document (README: status JSON).")
@click.option("--all", "every", is_flag=True, help="One line per run under the root, with its best metric.")
@root_option
def status(run: str | None, as_json: bool, every: bool, root: Path | None) -> None:
    """Trials, states, metrics, decisions and budget spent of RUN (default: the latest run)."""
    from .ledger import Ledger
    from .rundir import all_runs, find_run
    from .views.status import run_line, status_document

    if every:
        lines = [run_line(r) for r in all_runs(root)]
        if not lines:
            raise UsageError("no runs found here; pass --root (start one with `ara submit`)")
        if as_json:
            click.echo(json.dumps(lines, indent=2))
        else:
            from .views.terminal import print_runs

            print_runs(lines)
        return
    rundir = find_run(run, root)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        # One screen: the live trials and the last few; the JSON document has them all.
        doc = status_document(rundir, ledger, limit=None if as_json else 20)
    finally:
        ledger.close()
    if as_json:
        click.echo(json.dumps(doc, indent=2))
        return
    from .views.terminal import print_status

    print_status(doc)


@main.command()
@click.argument("run", required=False)
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@root_option
def watch(run: str | None, interval: float, once: bool, root: Path | None) -> None:
    """A live view of RUN (default: the latest): slots, progress, queue, best, budgets, decisions."""
    from .rundir import find_run
    from .views.watch import watch as live_view

    with contextlib.suppress(KeyboardInterrupt):  # the view only reads: leaving it leaves the run alone
        live_view(find_run(run, root), interval=interval, once=once)


@main.command()
@click.argument("run")
@click.argument("trial")
@root_option
def show(run: str, trial: str, root: Path | None) -> None:
    """One trial of RUN: hypothesis, decision, learning curves, diff, job, outcome and log tail."""
    from .outcome import JobState, Outcome
    from .rundir import find_run
    from .task import read_spec
    from .views.report import trial_report

    rundir = find_run(run, root)
    record = _trial_of(rundir, trial)
    outcome_path = rundir.trial_dir(record.id) / "outcome.json"
    outcome = (
        Outcome.read(outcome_path, missing_state=JobState.LOST, missing_reason="")
        if outcome_path.exists()
        else None
    )
    click.echo(_screen(trial_report(rundir, read_spec(rundir.task_copy), record, outcome)), nl=False)


def _trial_of(rundir: RunDir, trial: str) -> Trial:
    from .ledger import Ledger

    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        record = ledger.trial(trial)
    finally:
        ledger.close()
    if record is None:
        raise UsageError(f"run {rundir.run_id} has no trial {trial!r} (see `ara status {rundir.run_id}`)")
    return record


@main.command()
@click.argument("run")
@click.argument("trial")
@click.option("-f", "--follow", is_flag=True, help="Keep printing what the job writes until it ends.")
@click.option(
    "-n",
    "--bytes",
    "size",
    type=click.IntRange(min=1),
    default=8192,
    show_default=True,
    help="Bytes of the tail.",
)
@root_option
def logs(run: str, trial: str, follow: bool, size: int, root: Path | None) -> None:
    """The log of TRIAL in RUN (train.log: command and evaluation output): its tail, or follow it."""
    from .monitor import follow as follow_log
    from .monitor import tail
    from .rundir import LOG_FILE, find_run

    rundir = find_run(run, root)
    record = _trial_of(rundir, trial)
    path = rundir.trial_dir(record.id) / LOG_FILE
    if not path.exists() and not follow:
        raise UsageError(f"{record.id} has no log yet ({path}); its job has not started")
    click.echo(_screen(tail(path, size)), nl=False)
    if follow:

        def ended() -> bool:  # the job is over once its trial is measured or decided
            return _trial_of(rundir, record.id).state.value in ("waiting", "done")

        with contextlib.suppress(KeyboardInterrupt):
            for chunk in follow_log(path, ended, time.sleep):
                click.echo(_screen(chunk), nl=False)


@main.command()
@click.argument("run")
@click.argument("trial")
@root_option
def diff(run: str, trial: str, root: Path | None) -> None:
    """The diff of TRIAL in RUN against its parent (a re-run shows the diff of the trial it repeats)."""
    from .rundir import find_run

    rundir = find_run(run, root)
    record = _trial_of(rundir, trial)
    source = record
    if record.of and not _patch(rundir, record).strip():  # a re-run: same commit as its trial
        source = _trial_of(rundir, record.of)
        click.echo(f"# {record.id} re-runs {source.id}'s commit {(source.commit or '')[:7]}", err=True)
    path = rundir.trial_dir(source.id) / "patch.diff"
    if not path.exists():
        why = record.reason or "not materialized yet"
        raise UsageError(f"{record.id} has no diff ({record.decision or record.state}: {why})")
    click.echo(_screen(_patch(rundir, source)) or "(no change: the baseline)\n", nl=False)


def _patch(rundir: RunDir, record: Trial) -> str:
    path = rundir.trial_dir(record.id) / "patch.diff"
    return path.read_text(encoding="utf-8", errors="replace") if path.exists() else ""


@main.command()
@click.argument("run", required=False)
@click.option("--format", "fmt", type=click.Choice(["csv", "jsonl"]), default="csv", show_default=True)
@click.option(
    "-o", "--output", type=click.Path(dir_okay=False, path_type=Path), help="File to write (default: stdout)."
)
@root_option
def export(run: str | None, fmt: str, output: Path | None, root: Path | None) -> None:
    """The ledger of RUN (default: the latest) as CSV or JSON lines, one row per trial, for notebooks;
    one `param.<key>` column per searched parameter."""
    from .ledger import Ledger
    from .rundir import atomic_write_text, find_run
    from .views.exports import export as chunks
    from .views.exports import space_keys

    rundir = find_run(run, root)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        text = chunks(ledger, fmt, space_keys(rundir.task_copy))
        if output is None:
            for chunk in text:
                click.echo(chunk, nl=False)
        else:
            atomic_write_text(output, "".join(text))
            click.echo(f"wrote {output}")
    finally:
        ledger.close()


@main.command()
@click.argument("run", required=False)
@click.option("-e", "--entity", help="W&B entity to upload to (default: yours).")
@click.option("-p", "--project", help="W&B project (default: the one each run was logged under).")
@click.option("--dry-run", is_flag=True, help="Say what would be uploaded; upload nothing.")
@root_option
def sync(run: str | None, entity: str | None, project: str | None, dry_run: bool, root: Path | None) -> None:
    """Upload RUN's offline W&B runs (one per trial, and the summary run) from a node with internet."""
    import subprocess

    from .rundir import find_run
    from .views.wandb_summary import sync_commands

    rundir = find_run(run, root)
    # The summary run is refreshed first, so it shows the trail as it is now; a dry run writes nothing.
    if not dry_run:
        subprocess.run(
            [sys.executable, "-m", "slurm_autoresearch.views.wandb_summary", str(rundir.path)], check=False
        )
    extra = [*(["--entity", entity] if entity else []), *(["--project", project] if project else [])]
    commands = sync_commands(rundir.path, [*extra, *(["--dry-run"] if dry_run else [])])
    if not commands:
        click.echo(f"no offline W&B runs in {rundir.path} (does the training code call wandb.init()?)")
        return
    failed = 0
    for command in commands:
        out = subprocess.run(command, capture_output=True, text=True, check=False)
        last = (out.stdout + out.stderr).strip().splitlines()[-1:] or [""]
        failed += out.returncode != 0
        click.echo(f"{'ok    ' if out.returncode == 0 else 'FAILED'} {command[-1]}: {last[0]}")
    if failed:
        raise AraError(
            f"{failed} of {len(commands)} W&B uploads failed; run `ara sync {rundir.run_id}` again"
        )


@main.command()
@click.argument("run", required=False)
@root_option
def report(run: str | None, root: Path | None) -> None:
    """Write report.md, progress.png and report.html for RUN (default: the latest run); print their paths."""
    from .ledger import Ledger
    from .rundir import find_run
    from .task import read_spec
    from .views.html_report import write_html_report
    from .views.report import write_run_report

    rundir = find_run(run, root)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        spec = read_spec(rundir.task_copy)
        path = write_run_report(rundir, spec, ledger)
        html = write_html_report(rundir, spec, ledger)
    finally:
        ledger.close()
    click.echo(path)
    click.echo(rundir.progress)
    click.echo(html)


@main.command()
@click.argument("run")
@click.argument("text")
@root_option
def guide(run: str, text: str, root: Path | None) -> None:
    """Queue guidance TEXT for RUN's next planning round (the ledger records when it is read)."""
    from .rundir import find_run

    if not text.strip():
        raise UsageError("guidance text is empty; say what the planner should try or avoid")
    rundir = find_run(run, root)
    rundir.add_guidance(text, time.time())
    click.echo(f"queued for the next planning round of {rundir.run_id}: {_screen(' '.join(text.split()))}")


@main.command()
@click.argument("run", required=False)
@click.option("--yes", is_flag=True, help="Remove without asking.")
@click.option("--dry-run", is_flag=True, help="Say what would be removed; remove nothing.")
@click.option("--keep-best", is_flag=True, help="Keep the branch ara/<run>/best.")
@root_option
def clean(run: str | None, yes: bool, dry_run: bool, keep_best: bool, root: Path | None) -> None:
    """Remove an ended RUN's git worktrees, its ara/<run>/* branches and refs/ara/<run>/* refs.

    Its ledger, reports and trial logs (diffs included) stay; the trials' commits become
    unreferenced, so `ara rerun` and `ara resume` of the run may fail once git prunes them.
    """
    from .loop.cleanup import clean as remove
    from .loop.cleanup import plan, refuse, repo_of
    from .rundir import find_run

    rundir = find_run(run, root)
    why = refuse(rundir)
    if why:
        raise UsageError(f"not cleaning: {why}")
    todo = plan(rundir, repo_of(rundir), keep_best=keep_best)
    for wt in todo.worktrees:
        click.echo(f"worktree {wt}")
    for ref in todo.refs:
        click.echo(f"ref      {ref}")
    for ref, reason in todo.spared.items():
        click.echo(f"kept     {ref} ({reason})")
    if not todo.worktrees and not todo.refs:
        click.echo(f"run {rundir.run_id}: nothing to clean")
        return
    what = f"{len(todo.worktrees)} worktrees and {len(todo.refs)} refs of run {rundir.run_id}"
    if dry_run:
        click.echo(f"would remove {what} (--dry-run: nothing removed)")
        return
    if not yes:
        click.confirm(f"remove {what}?", abort=True)
    remove(rundir, todo)
    click.echo(f"removed {what}; its ledger, reports and trial logs stay in {rundir.path}")


@main.command()
@click.argument("run", required=False)
@click.option("--cancel", is_flag=True, help="Cancel running jobs too (recorded as crashes).")
@root_option
def stop(run: str | None, cancel: bool, root: Path | None) -> None:
    """Ask RUN's controller to finish: no new trials; running ones finish (or --cancel them)."""
    from .ledger import Ledger
    from .rundir import find_run
    from .views.status import run_state

    rundir = find_run(run, root)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        state = run_state(rundir, ledger.meta().get("state", "running"))
    finally:
        ledger.close()
    if state != "running":
        click.echo(f"run {rundir.run_id} is not running ({state}); nothing to stop")
        return
    rundir.request_stop(cancel)
    what = "cancel its running jobs and stop" if cancel else "finish its running trials and stop"
    click.echo(f"asked run {rundir.run_id} to {what}; follow with `ara status {rundir.run_id}`")


if __name__ == "__main__":
    main()
