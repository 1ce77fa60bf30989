"""`ara init`: task.toml and playbook.md for the training code in a folder, from what its files
say and, with consent, from what a few short runs of its command showed (`probe/`)."""

from __future__ import annotations

import json
import math
import re
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from .. import probe
from ..errors import UsageError

DEFAULT_METRIC = "val_loss"
PROBE_STEPS = 10


def _template(name: str) -> str:
    return resources.files("slurm_autoresearch").joinpath(name).read_text(encoding="utf-8")


@dataclass
class Plan:
    """What the files alone say: the command, the evaluation, the configs."""

    directory: Path
    command: str
    why: str = ""  # why this command
    others: list[str] = field(default_factory=list)  # the other commands the folder offers
    eval: str | None = None
    configs: list[str] = field(default_factory=list)

    @property
    def script(self) -> str:
        return probe.script_of(self.command) or "train.py"


def plan(directory: Path, command: str | None = None, force: bool = False) -> Plan:
    if not directory.is_dir():
        raise UsageError(f"{directory} is not a directory")
    if (directory / "task.toml").exists() and not force:
        raise UsageError(f"{directory / 'task.toml'} exists; edit it, or pass --force to overwrite it")
    here = directory.resolve()
    found = probe.candidates(here)
    evaluator = probe.evaluation_script(here)
    chosen = (
        next((c for c in found if c.command == command), None) if command else (found[0] if found else None)
    )
    return Plan(
        directory=here,
        command=command or (chosen.command if chosen else "python train.py"),
        why=chosen.why if chosen else "",
        others=[c.command for c in found if c is not chosen and c.score > 0][:3],
        eval=f"python {evaluator}" if evaluator else None,
        configs=probe.config_files(here),
    )


def run_probe(
    task_plan: Plan, steps: int, timeout_s: float, metric: str | None, echo: Callable[[str], None]
) -> probe.Findings:
    """The probe of init's command (as a trial runs it, with one CPU and no GPU); its metric chosen."""
    setup = probe.Setup(command=task_plan.command, eval=task_plan.eval, steps=steps, timeout_s=timeout_s)
    findings = probe.run_probe(task_plan.directory, setup, echo=echo)
    probe.conclude(findings, wanted=metric)
    return findings


def write_scaffold(
    task_plan: Plan,
    *,
    name: str | None,
    metric: str | None,
    goal: str | None,
    findings: probe.Findings | None = None,
) -> list[Path]:
    """task.toml (with comments saying what was detected and what to confirm), playbook.md, and
    the probe's findings in .ara/probe.json."""
    here = task_plan.directory
    name = name or re.sub(r"[^A-Za-z0-9._-]+", "-", here.name).strip("-.") or "task"
    text = render(task_plan, name=name, metric=metric, goal=goal, findings=findings)
    task_path = here / "task.toml"
    task_path.write_text(text, encoding="utf-8")
    written = [task_path]
    playbook = here / "playbook.md"
    if not playbook.exists():
        playbook.write_text(_template("playbooks/generic.md"), encoding="utf-8")
        written.append(playbook)
    if findings is not None:
        written.append(probe.write_findings(here / ".ara", findings))
    return written


# -- rendering ------------------------------------------------------------------------------------


def _str(value: str) -> str:
    """A TOML string: literal ('...') where it can be, so regexes and shell quotes stay readable."""
    return f"'{value}'" if "'" not in value and "\n" not in value else json.dumps(value, ensure_ascii=False)


def _line(code: str, comment: str = "") -> str:
    """A TOML line with its comment beside it, or above it where both would not fit in 110 columns."""
    if not comment:
        return code
    if max(len(code), 30) + 3 + len(comment) > 110:
        return "\n".join([*textwrap.wrap(comment, 98, initial_indent="# ", subsequent_indent="# "), code])
    return f"{code:<30} # {comment}"


def _comment(text: str) -> str:
    return "\n".join(textwrap.wrap(text, 98, initial_indent="# ", subsequent_indent="# "))


def _list(items: list[str]) -> str:
    return "[" + ", ".join(json.dumps(i) for i in items) + "]"


def _nice(value: float) -> int:
    """A round step count: 1, 2 or 5 times a power of ten."""
    exp = 10 ** math.floor(math.log10(max(value, 1)))
    return int(max(m * exp for m in (1, 2, 5) if m * exp <= max(value, 1)))


def _imports(directory: Path, script: str) -> list[str]:
    """Modules of the folder a script imports (`import model` -> model.py, a package -> pkg/**)."""
    out = []
    text = probe.read_head(directory / script)
    for module in dict.fromkeys(re.findall(r"^\s*(?:from|import)\s+([A-Za-z_]\w*)", text, re.M)):
        if (directory / f"{module}.py").is_file():
            out.append(f"{module}.py")
        elif (directory / module / "__init__.py").is_file():
            out.append(f"{module}/**")
    return out


def _static_freeze(directory: Path, script: str) -> list[str]:
    """Without a probe: the evaluation-like scripts and the data files beside the code (a folder
    with many files as one glob)."""
    freeze = [
        f for f in sorted(p.name for p in directory.iterdir() if p.is_file()) if probe.EVAL_SCRIPT.match(f)
    ]
    data = [rel for rel in probe.walk_files(directory) if probe.is_data(rel) and rel != script]
    groups: dict[str, list[str]] = {}
    for rel in data:
        groups.setdefault(rel.split("/", 1)[0] if "/" in rel else "", []).append(rel)
    for top, files in groups.items():
        freeze += [f"{top}/**"] if top and len(files) > 10 else files[:20]
    return [f for f in freeze if f != script]


def render(
    task_plan: Plan, *, name: str, metric: str | None, goal: str | None, findings: probe.Findings | None
) -> str:
    from ..spec import NoiseSection

    here, script, f = task_plan.directory, task_plan.script, findings
    probed = f is not None
    # -- the header
    if f is not None:
        head = _comment(
            f"Written by `ara init --probe` from {len(f.runs)} short runs of the command in scratch copies "
            f"(ARA_STEPS={', '.join(map(str, f.steps))}); what they showed is in .ara/probe.json. "
            "Comments say what was seen; check every CONFIRM."
        )
    else:
        head = (
            "# Written by `ara init` from the file names alone: nothing was run, so every CONFIRM is a\n"
            "# guess. `ara doctor task.toml` runs the command briefly and says what it really does."
        )
    # -- [task]
    command_note = task_plan.why or "CONFIRM: the script that trains"
    if task_plan.others:
        command_note += f" (also offered: {'; '.join(task_plan.others)})"
    if f is not None and f.failure:
        command_note = f"CONFIRM: the probe's run failed: {f.failure.splitlines()[0][:150]}"
    eval_line = (
        _line(
            f"eval = {_str(task_plan.eval)}",
            "the frozen evaluation, run after the command: the metric comes from it",
        )
        if task_plan.eval
        else '# eval = "python evaluate.py"     # a frozen evaluation run after the command, if you have one'
    )
    # -- [metric]
    seen = f.metric if f is not None else None
    if seen is not None and seen.get("value") is not None:
        metric_name, pattern = seen["name"], seen.get("pattern")
        where = f"in {seen['source']}" if seen["source"].startswith("the ") else seen["source"]
        metric_note = f"seen: {seen['value']:.6g} at ARA_SEED=0, {where}"
    else:
        metric_name, pattern = metric or probe_static_metric(here, task_plan) or DEFAULT_METRIC, None
        metric_note = (
            "CONFIRM: NOT SEEN: the probe's runs reported no such metric (print a '---' block, "
            "write ARA_METRICS_PATH, or set [metric] pattern)"
            if probed
            else "CONFIRM: the name the code reports (a '---' block line or a key of ARA_METRICS_PATH)"
        )
    guessed, sure = probe.guess_goal(metric_name)
    goal_note = (
        "as given"
        if goal
        else (f"from the name {metric_name!r}" if sure else "CONFIRM: the name does not say")
    )
    metric_lines = [
        _line(f'name = "{metric_name}"', metric_note),
        _line(f'goal = "{goal or guessed}"', goal_note),
        _line("min_delta = 0.0", "keep only when the metric improves by more than this"),
    ]
    if pattern:
        metric_lines.append(
            _line(f"pattern = {_str(pattern)}", "the code prints it in its own style: read with this")
        )
    # -- [budget]
    default = probe.default_steps(here, script)
    if default:
        steps, steps_note = default[0], f"ARA_STEPS of a trial: {default[1]}"
    elif f is not None and f.seconds_per_step:
        steps = max(100, min(1_000_000, _nice((300 - (f.startup_seconds or 0)) / f.seconds_per_step)))
        steps_note = "CONFIRM: ARA_STEPS of a trial, about 5 minutes of training at the probe's pace"
    else:
        steps, steps_note = 1000, "CONFIRM: ARA_STEPS, the step budget of a trial"
    expect = probe.trial_seconds(f, steps) if f is not None else None
    if f is not None and expect is not None:
        minutes = max(2, math.ceil(1.5 * expect / 60 + 1))
        per = probe.ms(f.seconds_per_step or f.seconds_per_step_at_most or 0)
        bound = "" if f.seconds_per_step else "at most "
        minutes_note = (
            f"a {steps}-step trial should take {bound}about {probe.ms(expect)} "
            f"({probe.ms(f.startup_seconds or 0)} start-up + {bound}{per} a step)"
        )
    else:
        minutes, minutes_note = 30, "CONFIRM: wall-clock limit per trial (not measured)"
    # -- [noise]
    noise = ""
    if f is not None and f.seed_changes_result is False:
        noise = (
            "\n[noise]\n"
            + _comment(
                f"WARNING: {probe.NO_SEED}. Seed 0 and seed 1 gave the same result; seed the code's RNGs "
                f"(random, numpy, torch) from ARA_SEED, then remove this line (the default is "
                f"{NoiseSection().repeats} baseline runs, one per seed)."
            )
            + "\nrepeats = 1\n"
        )
    elif f is not None and f.seed_changes_result:
        again = (
            "and the same seed repeats it" if f.repeats_identical else "but the same seed does NOT repeat it"
        )
        noise = (
            "\n[noise]\n"
            + _comment(
                f"ARA_SEED changes the result {again}: the baseline's seeds measure the noise a keep "
                "must clear (README: Decisions you can trust)."
            )
            + "\n"
            + _line(f"repeats = {NoiseSection().repeats}", "baseline runs, ARA_SEED = 0, 1, ...")
            + "\n"
        )
    # -- [surface]
    if f is not None and f.reads is not None:
        code = [r for r in f.reads if r.endswith((".py", ".sh")) and "/" not in r and r not in f.freeze]
        configs = [c for c in task_plan.configs if c in f.reads]
    else:
        code = _imports(here, script)
        configs = list(task_plan.configs)
    allow = list(dict.fromkeys([script, *code, *configs]))
    if f is not None and not f.failure:
        freeze = list(f.freeze)
        freeze_note = "read and never written by the probe's runs: CONFIRM"
        if f.reads is None:
            freeze_note = "never written by the probe's runs (reads not traced): CONFIRM"
        if not freeze:
            freeze_note = "the probe's runs read no data or evaluation file: CONFIRM"
    else:
        freeze = _static_freeze(here, script)
        freeze_note = "CONFIRM: the evaluation and the data, by their names"
    freeze = [x for x in freeze if x not in allow]
    surface = [
        _line(
            f"allow = {_list(allow)}", "what trials may change (globs: * stays in a directory, ** spans them)"
        ),
        _line(f"freeze = {_list(freeze)}", freeze_note),
    ]
    if f is not None and f.hidden and task_plan.eval:
        surface.append(
            _line(
                f"hidden = {_list(f.hidden)}",
                "CONFIRM: read only by the evaluation (an answer key?): frozen, out of training's reach",
            )
        )
    # -- [search]
    search = _search_block(task_plan, f)
    text = _template("templates/task.toml").format(
        head=head,
        name=name,
        description=f"Improve {metric_name} of the model trained by {script}.",
        command=_line(f"command = {_str(task_plan.command)}", command_note),
        eval_line=eval_line,
        metric="\n".join(metric_lines),
        steps=_line(f"steps = {steps}", steps_note),
        trial_minutes=_line(f"trial_minutes = {minutes}", minutes_note),
        noise=noise,
        surface="\n".join(surface),
        search=search,
    )
    return text


def probe_static_metric(directory: Path, task_plan: Plan) -> str | None:
    """Without a probe: a name the evaluation (or the command's script) prints as `name: value`
    after a `---` line, or writes as a JSON key, when the source says so plainly."""
    for script in (probe.script_of(task_plan.eval), task_plan.script):
        text = probe.read_head(directory / script) if script else ""
        if '"---"' in text or "'---'" in text:
            names = re.findall(r"""print\(\s*f?["']([A-Za-z_][\w./-]*)\s*:""", text)
            if names:
                return max(names, key=lambda n: (probe.rank(n), -names.index(n)))
    return None


def _search_block(task_plan: Plan, f: probe.Findings | None) -> str:
    proposal = f.config if f is not None else probe.propose_search(task_plan.directory)
    if proposal:
        lines = [
            "[search]",
            _line(
                f'config = "{proposal["file"]}"', "CONFIRM the ranges below: guessed from the values in it"
            ),
            "startup_trials = 4",
            "",
            "[search.space]",
        ]
        now = _values(task_plan.directory / proposal["file"])
        for key, literal in proposal["space"].items():
            lines.append(_line(f"{_key(key)} = {literal}", f"now {now.get(key, '?')}"))
        reasons: dict[str, list[str]] = {}
        for key, why in proposal["left_out"].items():
            reasons.setdefault(why, []).append(key)
        if reasons:
            lines.append(
                _comment("left out: " + "; ".join(f"{', '.join(k)} ({why})" for why, k in reasons.items()))
            )
        return "\n".join(lines)
    others = [c for c in task_plan.configs if not c.endswith(".toml")]
    note = (
        f"# {', '.join(others)} holds settings too, but [search] config must be a TOML file: the planner\n"
        "# can still change it with code edits.\n"
        if others
        else ""
    )
    return (
        note + "# [search]\n"
        '# config = "config.toml"       # the offline planner tunes keys of this file with Optuna TPE\n'
        "# [search.space]\n"
        "# lr = { low = 1e-4, high = 1e-1, log = true }\n"
        "# hidden = { choices = [64, 128, 256] }"
    )


def _key(dotted: str) -> str:
    return dotted if re.fullmatch(r"[A-Za-z0-9_-]+", dotted) else json.dumps(dotted)


def _values(path: Path) -> dict[str, str]:
    """Dotted key -> its value in a TOML config, as written in TOML."""
    import tomllib

    from ..config_file import toml_literal

    try:
        data = tomllib.loads(probe.read_head(path))
    except tomllib.TOMLDecodeError:
        return {}
    out: dict[str, str] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")
            elif not isinstance(value, list):
                out[f"{prefix}{key}"] = toml_literal(value)

    walk(data, "")
    return out
