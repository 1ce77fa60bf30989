"""TaskSpec: the schema of task.toml (pydantic, strict, unknown keys rejected) and its error messages.

Over 400 lines: one small model per task.toml section, each with its defaults and validators, in
the file's order, so this reads as the reference of task.toml; then the formatting that turns
pydantic's errors into one line naming the section and key.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .metrics import pattern_group

Scalar = str | int | float | bool
PositiveInt = Annotated[int, Field(gt=0)]
PositiveFloat = Annotated[float, Field(gt=0)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class TaskSection(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")]
    description: str = ""
    repo: str | None = None
    workdir: str | None = None
    command: Annotated[str, Field(min_length=1)]
    eval: str | None = None
    holdout: str | None = None  # a second frozen evaluation for kept trials; the planner never sees it
    playbook: str | None = None
    # The job's environment is an allowlist (jobenv.ALLOW); these reach it on purpose.
    env: dict[str, str] = {}
    pass_env: list[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]] = []

    @model_validator(mode="after")
    def _no_planner_key(self) -> TaskSection:
        named = [k for k in [*self.pass_env, *self.env] if k.upper().startswith("ANTHROPIC_")]
        if named:
            raise ValueError(f"{named[0]} is the planner's key: trial code never gets ANTHROPIC_* variables")
        return self


class MetricSection(_Section):
    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9_./-]+$")]
    goal: Literal["min", "max"]
    min_delta: Annotated[float, Field(ge=0)] = 0.0
    # A metric printed in the code's own style (`val_acc=0.83`, `test loss 2.19`): the last match
    # of this regex in the output the metric is read from; the number is its one group, or the
    # group named `value`.
    pattern: str | None = None

    @field_validator("pattern")
    @classmethod
    def _pattern_has_its_number(cls, pattern: str | None) -> str | None:
        if pattern is not None:
            pattern_group(pattern)
        return pattern


class BudgetSection(_Section):
    steps: PositiveInt
    trials: PositiveInt = 20
    trial_minutes: PositiveFloat = 10.0
    wall_hours: PositiveFloat | None = None
    gpu_hours: PositiveFloat | None = None
    llm_usd: PositiveFloat | None = None
    llm_tokens: PositiveInt | None = None
    crash_limit: PositiveInt = 5
    max_retries: Annotated[int, Field(ge=0)] = 2  # reruns of a trial after infrastructure failures


class RunSection(_Section):
    executor: Literal["auto", "local", "slurm"] = "auto"
    planner: Literal["auto", "offline", "anthropic"] = "auto"
    summarizer: Literal["auto", "rules", "anthropic"] = "auto"
    parallel: PositiveInt = 1
    root: str = ".ara"
    poll_seconds: PositiveFloat = 2.0
    # continuous: a freed slot starts the next trial at once; batch: every job of a round ends
    # before the next round is planned (the synchronous loop, kept for comparison)
    schedule: Literal["continuous", "batch"] = "continuous"
    plan_ahead: Annotated[int, Field(ge=0)] | None = None  # hypotheses kept ready; None: one per slot
    # hypotheses start only once the baseline is measured (else beside it, cancelled if it fails)
    wait_for_baseline: bool = False


class ResourcesSection(_Section):
    gpus_per_trial: Annotated[int, Field(ge=0)] = 0
    cpus_per_trial: PositiveInt = 1
    gpus: list[Annotated[int, Field(ge=0)]] = []


def time_minutes(value: int | str) -> int:
    """A `--time` value (minutes, or Slurm's `[D-]HH:MM:SS` forms) as whole minutes, rounded up."""
    if isinstance(value, int):
        if value <= 0:
            raise ValueError(f"time must be positive, found {value}")
        return value
    text = value.strip()
    if not re.fullmatch(r"(\d+-)?\d+(:\d{1,2}){0,2}", text):
        raise ValueError(f"time {value!r} is not minutes or [D-]HH:MM:SS")
    days, _, clock = text.rpartition("-")
    parts = [int(p) for p in clock.split(":")]
    # Slurm reads D-HH[:MM[:SS]] and HH:MM:SS from the hours, MM and MM:SS from the minutes.
    weights = (3600, 60, 1) if days or len(parts) == 3 else (60, 1)
    seconds = int(days or 0) * 86400 + sum(p * w for p, w in zip(parts, weights, strict=False))
    if seconds <= 0:
        raise ValueError(f"time {value!r} is not positive")
    return math.ceil(seconds / 60)


class SlurmSection(_Section):
    """sbatch options under Slurm's own names (underscores for dashes)."""

    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    time: Annotated[int, Field(gt=0)] | str | None = None
    gres: str | None = None
    gpus_per_node: PositiveInt | None = None
    cpus_per_task: PositiveInt | None = None
    mem: str | None = None
    constraint: str | None = None
    exclude: str | None = None
    setup: list[str] = []
    additional: dict[str, str | int | bool] = {}
    wckey: str | None = None
    signal_delay_s: Annotated[int, Field(ge=0)] | None = None
    python: str | None = None
    use_srun: bool = True
    poll_seconds: PositiveFloat = 5.0  # one sacct call per this interval, however many jobs
    max_pending_minutes: PositiveFloat | None = None  # cancel (and retry) a job pending this long
    submit_retries: Annotated[int, Field(ge=0)] = 6  # sbatch refusals retried with backoff

    @model_validator(mode="after")
    def _shape(self) -> SlurmSection:
        if self.time is not None:
            time_minutes(self.time)  # ValueError names the format
        if self.gres is not None and self.gpus_per_node is not None:
            raise ValueError("set either 'gres' or 'gpus_per_node', not both")
        if self.gres is not None and not re.fullmatch(r"[A-Za-z0-9_-]+(:[A-Za-z0-9_.-]+)?:\d+", self.gres):
            raise ValueError(f"gres {self.gres!r} is not name[:type]:count, e.g. gpu:a100:1")
        if self.mem is not None and not re.fullmatch(r"\d+[KMGT]?B?", self.mem.upper()):
            raise ValueError(f"mem {self.mem!r} is not a size such as 16G or 4000M")
        return self


class PlannerSection(_Section):
    seed: int = 0


class SurfaceSection(_Section):
    allow: Annotated[list[str], Field(min_length=1)]
    freeze: list[str] = []
    hidden: list[str] = []  # frozen, and out of the training's reach: only the evaluation reads them
    max_file_kb: PositiveInt = 256


class SandboxSection(_Section):
    """Where trial code runs: bubblewrap (a PID namespace, a read-only filesystem but for the
    worktree) when it works, or unprotected."""

    mode: Literal["auto", "bwrap", "none"] = "auto"
    network: bool = True
    bwrap: str = "bwrap"  # the program, e.g. a path on a cluster without it on PATH
    writable: list[str] = []  # absolute paths training may also write (a scratch dataset cache)
    hide: list[str] | None = None  # absolute paths training may not read; None: jobenv's default list


class ParamSpec(_Section):
    low: int | float | None = None
    high: int | float | None = None
    log: bool = False
    step: Annotated[int | float, Field(gt=0)] | None = None
    choices: list[Scalar] | None = None

    @model_validator(mode="after")
    def _shape(self) -> ParamSpec:
        if self.choices is not None:
            if not self.choices or self.low is not None or self.high is not None:
                raise ValueError("give either a non-empty 'choices' list or 'low' and 'high'")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give either a non-empty 'choices' list or 'low' and 'high'")
        if self.low >= self.high:
            raise ValueError(f"'low' ({self.low}) must be below 'high' ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scale range needs 'low' > 0")
        return self

    @property
    def is_int(self) -> bool:
        """An integer range: both bounds (and the step, if any) written as integers in the TOML."""
        return all(isinstance(v, int) for v in (self.low, self.high)) and (
            self.step is None or isinstance(self.step, int)
        )


class SearchSection(_Section):
    config: str | None = None
    startup_trials: PositiveInt = 4
    space: dict[str, ParamSpec] = {}

    @model_validator(mode="after")
    def _config_needed(self) -> SearchSection:
        if self.space and not self.config:
            raise ValueError("a search space needs 'config', the TOML file its keys live in")
        return self


class EditSpec(_Section):
    path: str
    search: str
    replace: str


class IdeaSpec(_Section):
    title: Annotated[str, Field(min_length=1)]
    rationale: str = ""
    config: dict[str, Scalar] = {}
    edits: list[EditSpec] = []

    @model_validator(mode="after")
    def _has_change(self) -> IdeaSpec:
        if not self.config and not self.edits:
            raise ValueError("an idea needs 'config' values or 'edits'")
        return self


Effort = Literal["low", "medium", "high", "xhigh", "max"]


class PriceSpec(_Section):
    """US dollars per million tokens; cache prices default to 1.25x (write) and 0.1x (read) input."""

    input: Annotated[float, Field(ge=0)]
    output: Annotated[float, Field(ge=0)]
    cache_write: Annotated[float, Field(ge=0)] | None = None
    cache_read: Annotated[float, Field(ge=0)] | None = None


class ModelsSection(_Section):
    planner: str = "claude-opus-5-5"
    summarizer: str = "claude-haiku-5-5"
    planner_effort: Effort | None = "medium"
    summarizer_effort: Effort | None = "low"
    planner_max_tokens: PositiveInt = 16000
    summarizer_max_tokens: PositiveInt = 1000
    timeout_s: PositiveFloat = 300.0
    max_retries: Annotated[int, Field(ge=0)] = 4
    prices: dict[str, PriceSpec] = {}


class DecideSection(_Section):
    by: Literal["rules", "summarizer"] = "rules"
    # noise: a race against the incumbent, one-sided tests against the measured spread (never
    # less than min_delta) at 1, 2, 4, ... runs; min_delta: the fixed margin on single runs;
    # auto: noise once [noise] repeats >= 2, else min_delta.
    rule: Literal["auto", "noise", "min_delta"] = "auto"
    # The chance that a change that does nothing is kept, over all its looks (union bound): 1 in 50.
    level: Annotated[float, Field(gt=0, lt=0.5)] = 0.02
    confirm: Annotated[int, Field(ge=0, le=49)] = 11  # most new-seed runs of a candidate; 0: single runs
    promising: Annotated[float, Field(ge=0)] = 0.5  # more runs while t >= promising x log2(runs)
    jump: Annotated[float, Field(ge=0)] = 2.0  # metric ratio over the incumbent that needs confirming
    simplicity: bool = True  # a tie within the margin keeps a candidate whose diff removes lines


class NoiseSection(_Section):
    repeats: Annotated[int, Field(ge=1, le=50)] = 3  # baseline runs with seeds seed..seed+k-1
    seed: Annotated[int, Field(ge=0)] = 0  # ARA_SEED of every trial's first run
    dof: Annotated[int, Field(ge=0, le=100)] = 8  # more incumbent seeds in free slots below this dof


class FidelitySection(_Section):
    """Screen every hypothesis at screen_steps; re-run the best at full_steps, which alone can keep.
    `screen_steps = "auto"` is screen_steps = full_steps // 8 with auto = true (TaskSpec turns it)."""

    screen_steps: Annotated[int, Field(ge=0)] = 0  # 0: no screening
    full_steps: PositiveInt | None = None  # default: budget.steps
    promote: PositiveInt = 1  # per round of screened hypotheses
    round_size: Annotated[int, Field(ge=1)] = 4  # screened hypotheses compared with each other
    promote_when: Literal["better", "top"] = "better"  # better: only those beating the incumbent's screen
    # Successive halving: a round's better half goes on at twice the steps, and so on, to `promote`
    halving: bool = False
    # Measure the job's start-up and per-step cost in the baseline's first array; screen only where
    # the predicted saving per hypothesis reaches min_saving
    auto: bool = False
    min_saving: Annotated[float, Field(ge=0, lt=1)] = 0.1


class ValidateSection(_Section):
    """The transfer check: when the run ends, the best `top` keeps (and the baseline) run again at
    `steps`, and the reports say whether their ranking held. A short search budget favours fast
    starters; this asks whether the winners still win with longer training."""

    top: Annotated[int, Field(ge=0, le=20)] = 0  # 0: no transfer check
    steps: PositiveInt | None = None  # required with top; above the search's full_steps
    seeds: Annotated[int, Field(ge=1, le=10)] = 1  # runs of each at `steps`


class PlaybookSection(_Section):
    persist: bool = False


class ControllerSection(_Section):
    """Where the controller runs: here (the login node), or as a small CPU-only Slurm job."""

    where: Literal["login", "slurm"] = "login"
    time: Annotated[int, Field(gt=0)] | str = "7-00:00:00"
    partition: str | None = None
    account: str | None = None
    qos: str | None = None
    mem: str = "4G"
    setup: list[str] = []
    restarts: Annotated[int, Field(ge=0)] = 20  # the job restarts a dead controller this often


class MonitorSection(_Section):
    tail_kb: Annotated[int, Field(ge=1, le=64)] = 4
    stall_minutes: PositiveFloat = 10.0


class EarlyStopSection(_Section):
    """Cancel a running trial whose curve diverges or trails the incumbent's at the same step. The
    training code prints progress lines naming the step and the metric: `step 300 val_loss 0.41`."""

    metric: str = ""  # the intermediate metric's name; "" reads no curves
    goal: Literal["max", "min"] | None = None  # the task metric's goal when it is the same name
    after: Annotated[float, Field(ge=0.0, le=1.0)] = 0.25  # no race verdict before this share of steps
    behind: PositiveFloat | None = None  # margin in the metric's units; None: `sd` x the runs' spread
    sd: PositiveFloat = 3.0  # the margin in standard deviations of the incumbent's runs at a step
    patience: PositiveInt = 3  # reports in a row behind before the trial is cancelled
    diverge: Annotated[float, Field(ge=0.0)] = 4.0  # a "min" metric above this x its best (0: off)


_CURVE_NAME = r"^[A-Za-z0-9_./-]*$"


class CurvesSection(_Section):
    """The learning curves a trial's digest reads from its progress lines (`step 200 loss 0.52`,
    `step 200 val_loss 0.41`): a few points, the best validation step and shape flags, shown to the
    planner, the summarizer and the reports."""

    train: Annotated[str, Field(pattern=_CURVE_NAME, max_length=40)] = "loss"  # "": no training curve
    train_goal: Literal["max", "min"] = "min"
    # None: [early_stop] metric when set, else the task's metric; "": no validation curve
    val: Annotated[str, Field(pattern=_CURVE_NAME, max_length=40)] | None = None
    val_goal: Literal["max", "min"] | None = None  # that metric's goal when it is the same name


class TrackingSection(_Section):
    """W&B for each trial's `wandb.init()`: offline files in the trial directory (`ara sync`
    uploads them), straight to W&B when the nodes have internet, or disabled."""

    wandb: Literal["offline", "online", "off"] = "offline"
    project: Annotated[str, Field(min_length=1)] | None = None  # default: the task's name


class TaskSpec(_Section):
    task: TaskSection
    metric: MetricSection
    budget: BudgetSection
    surface: SurfaceSection
    run: RunSection = RunSection()
    resources: ResourcesSection = ResourcesSection()
    planner: PlannerSection = PlannerSection()
    slurm: SlurmSection = SlurmSection()
    models: ModelsSection = ModelsSection()
    decide: DecideSection = DecideSection()
    noise: NoiseSection = NoiseSection()
    fidelity: FidelitySection = FidelitySection()
    # `[validate]` in task.toml; `validate` itself is a (deprecated) pydantic method's name
    transfer: ValidateSection = Field(ValidateSection(), alias="validate")
    playbook: PlaybookSection = PlaybookSection()
    monitor: MonitorSection = MonitorSection()
    early_stop: EarlyStopSection = EarlyStopSection()
    curves: CurvesSection = CurvesSection()
    controller: ControllerSection = ControllerSection()
    tracking: TrackingSection = TrackingSection()
    sandbox: SandboxSection = SandboxSection()
    search: SearchSection = SearchSection()
    ideas: list[IdeaSpec] = []

    @model_validator(mode="after")
    def _hidden_needs_an_evaluation(self) -> TaskSpec:
        if self.surface.hidden and not self.task.eval:
            raise ValueError("[surface] hidden files are read only by the frozen evaluation: set [task] eval")
        return self

    @model_validator(mode="before")
    @classmethod
    def _auto_screen_steps(cls, data: Any) -> Any:
        """`[fidelity] screen_steps = "auto"`: an eighth of the full budget, used where it pays."""
        fid = data.get("fidelity") if isinstance(data, dict) else None
        if not isinstance(fid, dict) or fid.get("screen_steps") != "auto":
            return data
        budget = data.get("budget")
        full = fid.get("full_steps") or (budget.get("steps") if isinstance(budget, dict) else None)
        if not isinstance(full, int) or isinstance(full, bool) or full < 2:
            return data  # left to the checks of each key, which say what is wrong
        return {**data, "fidelity": {**fid, "screen_steps": max(1, full // 8), "auto": True}}

    @model_validator(mode="after")
    def _decisions(self) -> TaskSpec:
        if self.decide.rule == "noise" and self.noise.repeats < 2:
            raise ValueError(
                '[decide] rule = "noise" needs a measured spread: set [noise] repeats to 2 or more'
            )
        if self.fidelity.screen_steps and self.fidelity.screen_steps >= self.full_steps:
            raise ValueError(
                f"[fidelity] screen_steps ({self.fidelity.screen_steps}) must be below full_steps "
                f"({self.full_steps})"
            )
        if (self.fidelity.auto or self.fidelity.halving) and not self.fidelity.screen_steps:
            raise ValueError('[fidelity] auto and halving need screen_steps: a number of steps, or "auto"')
        check = self.transfer
        if check.top and (check.steps is None or check.steps <= self.full_steps):
            raise ValueError(
                f"[validate] steps ({check.steps}) must be set above the search's full steps "
                f"({self.full_steps}) when [validate] top is set: the check re-runs at a longer budget"
            )
        stop = self.early_stop
        if stop.metric and stop.goal is None and stop.metric != self.metric.name:
            raise ValueError(
                f"[early_stop] metric {stop.metric!r} needs its direction: set [early_stop] goal to "
                '"max" or "min"'
            )
        return self

    @property
    def early_stop_goal(self) -> str:
        return self.early_stop.goal or self.metric.goal

    @property
    def curves_val(self) -> str:
        """The validation curve's name: [curves] val, else [early_stop] metric, else the metric's."""
        val = self.curves.val
        return val if val is not None else (self.early_stop.metric or self.metric.name)

    @property
    def curves_val_goal(self) -> str:
        if self.curves.val_goal is not None:
            return self.curves.val_goal
        return self.early_stop_goal if self.curves_val == self.early_stop.metric else self.metric.goal

    @model_validator(mode="after")
    def _curve_goals(self) -> TaskSpec:
        val = self.curves_val
        if val and self.curves.val_goal is None and val not in (self.metric.name, self.early_stop.metric):
            raise ValueError(
                f'[curves] val {val!r} needs its direction: set [curves] val_goal to "max" or "min"'
            )
        return self

    @property
    def full_steps(self) -> int:
        return self.fidelity.full_steps or self.budget.steps

    @property
    def screening(self) -> bool:
        return self.fidelity.screen_steps > 0

    @property
    def noise_rule(self) -> bool:
        """Whether keeps are judged against the measured spread (else the fixed min_delta)."""
        return self.decide.rule == "noise" or (self.decide.rule == "auto" and self.noise.repeats >= 2)


# -- error formatting -----------------------------------------------------------------------


def _section_of(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, type[BaseModel] | None]:
    """Human location of a pydantic error and the model that owns its last key."""
    owner: type[BaseModel] | None = model
    parts: list[str] = []
    for item in loc[:-1]:
        if isinstance(item, int):
            parts.append(f"#{item + 1}")
            continue
        field = owner.model_fields.get(item) if owner else None
        parts.append(str(item))
        owner = _model_in(field.annotation) if field else None
    where = ".".join(parts).replace(".#", " #")
    return (f"[{where}]" if where else "top level"), owner


def _model_in(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        found = _model_in(arg)
        if found:
            return found
    return None


def format_validation_error(source: str, exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    loc = tuple(first["loc"])
    kind = first["type"]
    if loc and isinstance(loc[-1], int):  # a whole item of a list failed, e.g. one [[ideas]] table
        loc = (*loc, "")
    where, owner = _section_of(TaskSpec, loc)
    key = loc[-1] if loc else ""
    if kind == "extra_forbidden" and owner is not None:
        valid = ", ".join(owner.model_fields)
        msg = f"unknown key {key!r} in {where}; valid keys: {valid}"
    elif kind == "missing":
        msg = f"missing key {key!r} in {where}"
    else:
        found = first.get("input")
        expected = re.sub(r"^(Input should be|Value error,)\s*", "", first["msg"])
        label = f"{where} {key}" if key else where
        if kind.startswith(("model_", "dict_")) or kind == "value_error":
            msg = f"{label}: {expected}"
        else:
            msg = f"{label}: found {found!r}, expected {expected}"
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    return f"{source}: {msg}{more}"
