"""The loop's parts built on their own, without a run: Trials' steps, the Referee and Planning."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from slurm_autoresearch.hypothesis import Edit, Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.models import Models
from slurm_autoresearch.loop.planning import Planning
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.loop.records import Records, RunLog
from slurm_autoresearch.loop.referee import Referee
from slurm_autoresearch.loop.state import RunState
from slurm_autoresearch.loop.summarizer import RuleSummarizer
from slurm_autoresearch.outcome import JobState, Outcome
from slurm_autoresearch.planners import PlanContext
from slurm_autoresearch.planners.base import PlannerUnavailable
from slurm_autoresearch.playbook import Playbook
from slurm_autoresearch.rundir import RunDir
from slurm_autoresearch.task import Task
from slurm_autoresearch.trial import Decision, Trial, TrialKind, TrialState
from slurm_autoresearch.trials import STEPS, IllegalStep, Trials, diagram
from slurm_autoresearch.workspace import Workspace

from .conftest import TASK, commit_all, git, write_task

ROOT = Path(__file__).resolve().parents[1]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Started:
    """The jobs side as the referee and planning see it: rows they asked to start, in order."""

    rows: list[Trial] = field(default_factory=list)
    fallbacks: dict[str, Trial] = field(default_factory=dict)

    def start(self, rows: list[Trial], *, patch: str = "", fallbacks: dict[str, Trial] | None = None) -> None:
        self.rows.extend(rows)
        self.fallbacks.update(fallbacks or {})


@dataclass
class Slots:
    capacity: int = 2
    running: int = 0

    def live(self) -> int:
        return self.running


class Parts:
    """A task on the toy repo, its run directory and ledger, and the parts the loop would wire."""

    def __init__(self, repo: Path, *, repeats: int = 1, run: str = "unit") -> None:
        task = TASK.format(trials=6, parallel=2).replace("repeats = 1 ", f"repeats = {repeats} ")
        self.task: Task = load_task(write_task(repo, base=task))
        self.spec = self.task.spec
        self.clock = Clock()
        self.lines: list[str] = []
        self.rundir = RunDir.create(repo / ".ara" / "runs", run)
        self.ledger = Ledger.open(self.rundir.ledger)
        self.log = RunLog(self.rundir, self.clock, self.lines.append)
        self.trials = Trials(self.ledger, self.clock)
        self.slots = Slots()
        self.state = RunState(
            self.spec, self.ledger, started=self.clock(), clock=self.clock, live=self.slots.live, log=self.log
        )
        rules = RuleSummarizer(self.spec)
        self.models = Models(None, rules, rules, self.state, self.ledger, self.log)
        self.playbook = Playbook.start(self.rundir.playbook, None, False)
        self.records = Records(self.rundir, self.spec, self.ledger)
        self.ws = Workspace(repo, ".", run, self.rundir.path / "worktrees", self.task.surface, 1 << 20)
        self.started = Started()
        self.base = git(repo, "rev-parse", "HEAD").strip()

    def referee(self) -> Referee:
        return Referee(
            self.spec, self.rundir, self.ledger, self.trials, self.state, self.started, self.ws,
            self.models, self.playbook, self.records, self.log, self.clock,
        )  # fmt: skip

    def running(self, trial: Trial, commit: str) -> Trial:
        """A planned trial walked to RUNNING, as the jobs side and the watcher would."""
        if trial.commit is None:
            self.trials.materialized(trial, commit)
        self.trials.submitting(trial)
        self.trials.submitted(trial, f"job-{trial.id}")
        return self.trials.started(trial, f"job-{trial.id}")

    def plan(self, commit: str, kind: TrialKind = TrialKind.HYPOTHESIS, of: Trial | None = None) -> Trial:
        parent = of.commit if of else self.base
        return self.trials.planned(
            Hypothesis(f"{kind} on {commit[:7]}"),
            parent=parent or self.base,
            parent_trial=of.id if of else ("T0001" if kind is not TrialKind.BASELINE else None),
            kind=kind,
            of=of.id if of else None,
            commit=commit if of else None,
            steps=self.spec.budget.steps,
        )


def completed(metric: float) -> Outcome:
    return Outcome(JobState.COMPLETED, exit_code=0, metric=metric, metrics={"score": metric}, elapsed=1.0)


def change(repo: Path, x: float) -> str:
    """A commit on its own branch from the base: config.toml's x set to a new value."""
    git(repo, "checkout", "-q", "-b", f"x{x}", "main")
    (repo / "config.toml").write_text(f"x = {x}  # the x knob\ny = 2.0\n")
    sha = commit_all(repo, f"x = {x}")
    git(repo, "checkout", "-q", "main")
    return sha


# -- Trials -----------------------------------------------------------------------------------


def test_a_step_from_the_wrong_state_is_refused_by_the_ledgers_state(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    trials = Trials(ledger, Clock())
    t = trials.planned(Hypothesis("idea"), parent="a" * 40, parent_trial=None)
    with pytest.raises(IllegalStep, match=r"T0001: `measured` may follow .*not planned"):
        trials.measured(t, completed(0.5), "score")
    stale = ledger.trial("T0001")
    assert stale is not None
    trials.rejected(t, "edits do not apply")
    # A copy read before the step still says PLANNED; the ledger's state is what is checked.
    with pytest.raises(IllegalStep, match="not done"):
        trials.materialized(stale, "b" * 40)
    assert [e["kind"] for e in ledger.events()] == ["planned", "rejected"]


def test_every_state_is_reachable_and_done_is_final() -> None:
    reached = {TrialState.PLANNED}
    for _ in STEPS:
        for step in STEPS.values():
            if step.sources & reached:
                reached.add(step.target or next(iter(step.sources)))
    assert reached == set(TrialState)
    assert not any(TrialState.DONE in step.sources for step in STEPS.values())


def test_design_md_holds_the_diagram_of_steps() -> None:
    """DESIGN.md's lifecycle is generated by trials.diagram(): a new step must show there too."""
    text = (ROOT / "DESIGN.md").read_text(encoding="utf-8")
    found = re.search(r"```mermaid\n(stateDiagram-v2\n.*?)\n```", text, re.S)
    assert found, "DESIGN.md has no mermaid state diagram"
    assert found.group(1) == diagram(), (
        "regenerate it: python -c 'from slurm_autoresearch.trials import diagram; print(diagram())'"
    )


# -- the Referee ----------------------------------------------------------------------------


def test_referee_keeps_discards_and_records_without_a_run(toy_repo: Path) -> None:
    parts = Parts(toy_repo)
    referee = parts.referee()
    better, worse = change(toy_repo, 0.1), change(toy_repo, 3.0)

    base = parts.running(parts.plan(parts.base, TrialKind.BASELINE), parts.base)
    referee.ended(base, completed(0.5))
    assert parts.state.incumbent is not None and parts.state.incumbent.id == "T0001"
    assert parts.ws.repo.git.rev_parse("ara/unit/best") == parts.base

    t2 = parts.running(parts.plan(better), better)
    referee.ended(t2, completed(0.9))
    t3 = parts.running(parts.plan(worse), worse)
    referee.ended(t3, completed(0.1))
    t4 = parts.running(parts.plan(worse), worse)
    referee.ended(t4, Outcome(JobState.FAILED, exit_code=1, reason="exit code 1"))

    decided = {t.id: t.decision for t in parts.ledger.trials()}
    assert decided == {"T0001": Decision.KEEP, "T0002": Decision.KEEP, "T0003": Decision.DISCARD,
                       "T0004": Decision.CRASH}  # fmt: skip
    assert parts.state.incumbent.id == "T0002"
    assert parts.ws.repo.git.rev_parse("ara/unit/best") == better
    assert parts.started.rows == []  # single runs: no confirmation, no combination
    assert (parts.rundir.trial_dir("T0003") / "report.md").is_file()
    assert len(parts.rundir.results.read_text().splitlines()) == 5  # header and four decisions
    assert any("T0002 keep: score=0.9" in line for line in parts.lines)
    with pytest.raises(IllegalStep, match="T0003: `decided` may follow waiting, not done"):
        referee.judge(t3)


def test_referee_waits_for_seeds_and_asks_for_confirmation(toy_repo: Path) -> None:
    parts = Parts(toy_repo, repeats=3)  # the default: the toy TASK pins single runs
    referee = parts.referee()
    candidate = change(toy_repo, 0.4)

    base = parts.running(parts.plan(parts.base, TrialKind.BASELINE), parts.base)
    seeds = referee.runs(base, 2, parts.spec.budget.steps, TrialKind.REPEAT, "noise estimate")
    assert [(r.kind, r.of, r.seed, r.commit) for r in parts.started.rows] == [
        (TrialKind.REPEAT, "T0001", 1, parts.base), (TrialKind.REPEAT, "T0001", 2, parts.base)
    ]  # fmt: skip
    referee.ended(base, completed(0.50))
    assert parts.ledger.state_of("T0001") is TrialState.WAITING  # its seeds still run
    for row, value in zip(seeds, (0.51, 0.49), strict=True):
        referee.ended(parts.running(row, parts.base), completed(value))
    kept = parts.ledger.trial("T0001")
    assert kept is not None and kept.decision is Decision.KEEP and kept.evidence
    assert kept.evidence["dof"] == 2 and kept.evidence["sigma"] == pytest.approx(0.01)

    parts.started.rows.clear()
    t4 = parts.running(parts.plan(candidate), candidate)
    referee.ended(t4, completed(0.52))  # promising, not yet sure: more seeds of the same commit
    assert parts.ledger.state_of("T0004") is TrialState.WAITING
    assert parts.started.rows and {(r.kind, r.of, r.commit) for r in parts.started.rows} == {
        (TrialKind.REPEAT, "T0004", candidate)
    }


# -- Planning -------------------------------------------------------------------------------


class ListPlanner:
    """A planner that answers from a list of answers (a hypothesis list, or an exception)."""

    name = "list"

    def __init__(self, answers: list[list[Hypothesis] | Exception]) -> None:
        self.answers = answers
        self.asked: list[int] = []
        self.contexts: list[PlanContext] = []

    def baseline(self, files: dict[str, str]) -> Hypothesis:
        return Hypothesis.baseline()

    def propose(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        self.asked.append(n)
        self.contexts.append(ctx)
        answer = self.answers.pop(0) if self.answers else []
        if isinstance(answer, Exception):
            raise answer
        return answer


def idea(x: float) -> Hypothesis:
    return Hypothesis(f"x = {x}", "why", edits=(Edit("config.toml", "x = 0.5  # the x knob", f"x = {x}"),))


def planning_for(parts: Parts, planner: ListPlanner) -> Planning:
    base = parts.running(parts.plan(parts.base, TrialKind.BASELINE), parts.base)
    parts.referee().ended(base, completed(0.5))
    return Planning(
        parts.task, parts.rundir, parts.ledger, parts.trials, parts.state, planner, parts.started,
        parts.slots, parts.ws, parts.models, parts.playbook, parts.log, parts.clock,
    )  # fmt: skip


def settle(planning: Planning) -> None:
    planning.fill()
    planning.wait(timeout=10)
    planning.fill()


def test_planning_fills_free_slots_and_keeps_the_rest_ready(toy_repo: Path) -> None:
    parts = Parts(toy_repo)
    planner = ListPlanner([[idea(1.0), idea(2.0), idea(3.0)]])
    planning = planning_for(parts, planner)
    settle(planning)
    assert planner.asked == [4]  # two free slots and two planned ahead
    started = parts.started.rows
    assert [(t.id, t.parent, t.parent_trial, t.kind) for t in started] == [
        ("T0002", parts.base, "T0001", TrialKind.HYPOTHESIS),
        ("T0003", parts.base, "T0001", TrialKind.HYPOTHESIS),
    ]
    assert [a.hypothesis.title for a in planning.ready] == ["x = 3.0"]
    ctx = planner.contexts[0]
    assert ctx.incumbent is not None and ctx.incumbent.id == "T0001" and "config.toml" in ctx.files
    planning.close()


def test_planning_says_when_the_planner_is_dry_or_keeps_failing(toy_repo: Path) -> None:
    parts = Parts(toy_repo)
    planning = planning_for(parts, ListPlanner([[]]))
    settle(planning)
    planning.fill()
    assert parts.state.exhausted == "planner has nothing left to propose" and not parts.state.stopping
    planning.close()

    parts = Parts(toy_repo, run="again")
    failing = ListPlanner([PlannerUnavailable("HTTP 529 overloaded") for _ in range(5)])
    planning = planning_for(parts, failing)
    for _ in range(5):
        settle(planning)
        assert planning.paused()
        parts.clock.now = planning.paused_until + 1
    assert parts.state.stopping == "stopped: the planner failed 5 rounds in a row (HTTP 529 overloaded)"
    assert not parts.state.may_run_more() and len(failing.asked) == 5
    planning.close()
