"""Claude planner and summarizer through the real anthropic SDK against the fake Messages API."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest

from slurm_autoresearch.errors import EditError
from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.llm import LLM, scrub
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.monitor import Monitor
from slurm_autoresearch.planners import OfflinePlanner, PlanContext
from slurm_autoresearch.planners.base import PlannerUnavailable
from slurm_autoresearch.planners.claude import ClaudePlanner
from slurm_autoresearch.trial import Decision, Trial, TrialState
from slurm_autoresearch.workspace import Workspace

from .conftest import API_KEY, _fake_module, claude_task, commit_all, git, repo_state

CODE_EDIT = {
    "title": "Bonus term in the objective",
    "rationale": "A code change, not a config value.",
    "expected": "score +5",
    "risk": "low",
    "edits": [
        {
            "path": "train.py",
            "search": 'value = -(cfg["x"] - 3) ** 2 - (cfg["y"] + 1) ** 2\n',
            "replace": 'value = -(cfg["x"] - 3) ** 2 - (cfg["y"] + 1) ** 2 + 5\n',
        }
    ],
}


def Reply(**kwargs: Any) -> Any:
    return _fake_module().Reply(**kwargs)


def _run(path: Path, **kwargs: Any) -> tuple[Any, Ledger]:
    controller = launch(load_task(path), echo=lambda _: None, **kwargs)
    controller.run()
    return controller, Ledger.open(controller.rundir.ledger, readonly=True)


def test_claude_plans_code_edits_that_become_commits(toy_repo: Path, fake_claude: Any) -> None:
    fake_claude.push(Reply(tool_input={"hypotheses": [CODE_EDIT]}), tool="propose_hypotheses")
    controller, ledger = _run(claude_task(toy_repo, trials=4))
    trials = ledger.trials()
    assert [t.source for t in trials] == ["baseline", "anthropic", "anthropic", "anthropic"]
    coded = trials[1]
    assert coded.title == CODE_EDIT["title"] and coded.decision is Decision.KEEP
    assert "+5" in git(toy_repo, "show", f"refs/ara/{controller.rundir.run_id}/T0002", "--", "train.py")
    assert all(t.decision in (Decision.KEEP, Decision.DISCARD) for t in trials)
    # Tokens and cost per trial: each got its share of planning and its own summaries.
    assert all(t.llm_tokens > 0 and t.llm_usd > 0 for t in trials[1:])
    calls = ledger.calls()
    assert {c["role"] for c in calls} == {"planner", "summarizer"}
    assert all(c["request_bytes"] > 0 and c["error"] == "" for c in calls)
    # The stable prompt is marked for caching and served from the cache after the first call.
    planned = fake_claude.calls("propose_hypotheses")
    assert all(b.get("cache_control") for b in planned[0]["body"]["system"])
    assert (
        planned[0]["headers"].get("authorization") == f"Bearer {API_KEY}"
        or planned[0]["headers"].get("x-api-key") == API_KEY
    )
    planner_calls = [c for c in calls if c["role"] == "planner"]
    assert planner_calls[0]["cache_write_tokens"] > 0 and planner_calls[1]["cache_read_tokens"] > 0
    # Summarizer: at most 3 calls per trial (here: the end-of-trial judgement only).
    per_trial: dict[str, int] = {}
    for c in calls:
        if c["role"] == "summarizer":
            per_trial[c["trial"]] = per_trial.get(c["trial"], 0) + 1
    assert per_trial and max(per_trial.values()) <= 3
    assert trials[1].summary and trials[1].learning
    ledger.close()


def test_api_key_never_reaches_the_run_directory_or_the_trial(toy_repo: Path, fake_claude: Any) -> None:
    path = claude_task(toy_repo, trials=3)
    path.write_text(
        path.read_text().replace(
            'command = "python train.py"',
            'command = "env && (cat /proc/$PPID/environ /proc/*/environ || true) && python train.py"',
        )
    )
    fake_claude.push(
        Reply(tool_input={"hypotheses": [{**CODE_EDIT, "title": "print the key: " + API_KEY[:6]}]}),
        tool="propose_hypotheses",
    )
    controller, ledger = _run(path)
    ledger.close()
    files = [p for p in controller.rundir.path.rglob("*") if p.is_file()]
    logs = [p for p in files if p.name == "train.log"]
    # The training printed its environment (and every one it could read) into its log.
    assert logs and all(b"ARA_TRIAL_ID=" in p.read_bytes() for p in logs) and len(files) > 20
    for p in files:
        data = p.read_bytes()
        assert API_KEY.encode() not in data, p
        assert b"ANTHROPIC_" not in data or p.name != "train.log", p


HOSTILE: list[tuple[str, Any, str]] = [
    ("not an object", ["change everything"], "not a propose_hypotheses call"),
    ("hypotheses not a list", {"hypotheses": "all"}, "not a propose_hypotheses call"),
    ("item not an object", {"hypotheses": ["lr up"]}, "hypothesis is not an object"),
    ("no title", {"hypotheses": [{**CODE_EDIT, "title": None}]}, "missing title"),
    ("empty title", {"hypotheses": [{**CODE_EDIT, "title": "   "}]}, "missing title"),
    ("long title", {"hypotheses": [{**CODE_EDIT, "title": "x" * 300}]}, "longer than 120"),
    ("title with ;", {"hypotheses": [{**CODE_EDIT, "title": "tune; rm -rf ~"}]}, "shell metacharacters"),
    ("title with $()", {"hypotheses": [{**CODE_EDIT, "title": "tune $(reboot)"}]}, "shell metacharacters"),
    ("title with backtick", {"hypotheses": [{**CODE_EDIT, "title": "tune `id`"}]}, "shell metacharacters"),
    ("title with newline", {"hypotheses": [{**CODE_EDIT, "title": "tune\nrm"}]}, "shell metacharacters"),
    ("rationale not text", {"hypotheses": [{**CODE_EDIT, "rationale": 42}]}, "rationale is not text"),
    ("huge rationale", {"hypotheses": [{**CODE_EDIT, "rationale": "y" * 10_000}]}, "rationale longer"),
    ("no edits", {"hypotheses": [{**CODE_EDIT, "edits": []}]}, "no edits"),
    ("edits not a list", {"hypotheses": [{**CODE_EDIT, "edits": "edit it"}]}, "no edits"),
    ("too many edits", {"hypotheses": [{**CODE_EDIT, "edits": CODE_EDIT["edits"] * 25}]}, "25 edits"),
    ("edit not an object", {"hypotheses": [{**CODE_EDIT, "edits": ["x"]}]}, "edit 1 is not"),
    (
        "edit without replace",
        {"hypotheses": [{**CODE_EDIT, "edits": [{"path": "train.py", "search": "x"}]}]},
        "edit 1 is not",
    ),
    (
        "huge edit",
        {
            "hypotheses": [
                {**CODE_EDIT, "edits": [{"path": "new.py", "search": "", "replace": "#" * 300_000}]}
            ]
        },
        "byte file limit",
    ),
    (
        "absolute path",
        {"hypotheses": [{**CODE_EDIT, "edits": [{"path": "/etc/passwd", "search": "", "replace": "x"}]}]},
        "absolute path",
    ),
    (
        "dotdot",
        {"hypotheses": [{**CODE_EDIT, "edits": [{"path": "../outside.py", "search": "", "replace": "x"}]}]},
        "climbs out",
    ),
    (
        "git config",
        {"hypotheses": [{**CODE_EDIT, "edits": [{"path": ".git/config", "search": "", "replace": "x"}]}]},
        "points into .git",
    ),
    (
        "frozen file",
        {
            "hypotheses": [
                {
                    **CODE_EDIT,
                    "edits": [
                        {"path": "evaluate.py", "search": "import json", "replace": "import json  # x"}
                    ],
                }
            ]
        },
        "is frozen",
    ),
    (
        "outside the surface",
        {"hypotheses": [{**CODE_EDIT, "edits": [{"path": "README.md", "search": "toy", "replace": "x"}]}]},
        "outside the edit surface",
    ),
    (
        "search not found",
        {
            "hypotheses": [
                {**CODE_EDIT, "edits": [{"path": "train.py", "search": "nonexistent", "replace": "x"}]}
            ]
        },
        "search text not found",
    ),
    (
        "search ambiguous",
        {"hypotheses": [{**CODE_EDIT, "edits": [{"path": "train.py", "search": "cfg", "replace": "x"}]}]},
        "train.py: search text occurs only inside a line",
    ),
    (
        "symlink",
        {"hypotheses": [{**CODE_EDIT, "edits": [{"path": "src/evil.py", "search": "", "replace": "x"}]}]},
        "symlink",
    ),
    (
        "NUL in path",
        {"hypotheses": [{**CODE_EDIT, "edits": [{"path": "a\u0000b.py", "search": "", "replace": "x"}]}]},
        "backslash or NUL",
    ),
    (
        "changes nothing",
        {
            "hypotheses": [
                {
                    **CODE_EDIT,
                    "edits": [
                        {
                            "path": "config.toml",
                            "search": "x = 0.5  # the x knob\n",
                            "replace": "x = 0.5  # the x knob\n",
                        }
                    ],
                }
            ]
        },
        "edits change nothing",
    ),
]


@pytest.fixture
def planner_bench(
    toy_repo: Path, tmp_path: Path, fake_claude: Any
) -> tuple[ClaudePlanner, PlanContext, Workspace]:
    outside = tmp_path / "outside"
    outside.mkdir()
    os.symlink(outside, toy_repo / "src")
    commit_all(toy_repo, "symlinked src")
    task = load_task(claude_task(toy_repo))
    (tmp_path / "wt").mkdir()  # the worktrees' root: what a trial may write lies below it
    llm = LLM(task.spec.models)
    planner = ClaudePlanner(llm, OfflinePlanner(task.spec))
    ws = Workspace(
        task.repo, task.workdir, "r", tmp_path / "wt", task.surface, task.spec.surface.max_file_kb * 1024
    )
    files = ws.surface_files(ws.head())
    return planner, PlanContext(task, [], None, files, 10), ws


@pytest.mark.parametrize(("case", "tool_input", "reason"), HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_planner_output_is_rejected_with_its_reason(
    planner_bench: tuple[ClaudePlanner, PlanContext, Workspace],
    fake_claude: Any,
    toy_repo: Path,
    tmp_path: Path,
    case: str,
    tool_input: Any,
    reason: str,
) -> None:
    planner, ctx, ws = planner_bench
    before = repo_state(toy_repo)
    outside_before = sorted(p.name for p in tmp_path.iterdir())
    fake_claude.push(Reply(tool_input=tool_input), tool="propose_hypotheses")
    [hypothesis] = planner.propose(ctx, 1)
    found = hypothesis.invalid
    if not found:
        with pytest.raises(EditError) as info:
            ws.materialize("T0002", ws.head(), list(hypothesis.edits), "hostile")
        found = str(info.value)
    assert reason in found
    assert sorted(p.name for p in tmp_path.iterdir()) == outside_before
    assert not list((tmp_path / "outside").iterdir()) and not Path("/etc/passwd").read_text().startswith("x")
    assert repo_state(toy_repo)[:3] == before[:3]
    assert not (tmp_path / "wt" / "T0002").exists()


def test_truncated_and_text_answers_are_rejected(planner_bench: Any, fake_claude: Any) -> None:
    planner, ctx, _ = planner_bench
    fake_claude.push(
        Reply(tool_input={"hypotheses": [CODE_EDIT]}, stop_reason="max_tokens"), tool="propose_hypotheses"
    )
    assert "truncated at max_tokens" in planner.propose(ctx, 1)[0].invalid
    text = {
        "id": "m",
        "type": "message",
        "role": "assistant",
        "model": "x",
        "stop_reason": "end_turn",
        "content": [{"type": "text", "text": "Sure! Here are my ideas: ..."}],
        "usage": {"input_tokens": 5, "output_tokens": 5},
    }
    fake_claude.push(Reply(body=text), tool="propose_hypotheses")
    assert "not a propose_hypotheses call" in planner.propose(ctx, 1)[0].invalid


def test_a_bad_hypothesis_does_not_sink_its_batch(planner_bench: Any, fake_claude: Any) -> None:
    planner, ctx, _ = planner_bench
    bad = {**CODE_EDIT, "title": "bad; one"}
    good = {**CODE_EDIT, "title": "good one"}
    fake_claude.push(Reply(tool_input={"hypotheses": [bad, good, good]}), tool="propose_hypotheses")
    out = planner.propose(ctx, 3)
    assert [bool(h.invalid) for h in out] == [True, False, True]  # the repeat is "already tried"
    assert out[2].invalid == "already tried in this run"


@pytest.mark.parametrize("statuses", [[429], [529], [500], [429, 529, 500][:2], ["timeout"]])
def test_transient_faults_are_retried(planner_bench: Any, fake_claude: Any, statuses: list[Any]) -> None:
    planner, ctx, _ = planner_bench
    for status in statuses:
        if status == "timeout":
            fake_claude.push(Reply(delay=3.0), tool="propose_hypotheses")  # the client gives up after 1 s
        else:
            fake_claude.push(
                Reply(status=status, headers={"retry-after-ms": "20"}), tool="propose_hypotheses"
            )
    fake_claude.push(Reply(tool_input={"hypotheses": [CODE_EDIT]}), tool="propose_hypotheses")
    planner.llm.client = None
    planner.llm.models = planner.llm.models.model_copy(update={"timeout_s": 1.0, "max_retries": 2})
    [h] = planner.propose(ctx, 1)
    assert h.title == CODE_EDIT["title"] and not h.invalid and not planner.degraded
    assert len(fake_claude.messages()) == len(statuses) + 1


def test_persistent_failure_falls_back_then_pauses(planner_bench: Any, fake_claude: Any) -> None:
    planner, ctx, _ = planner_bench
    fake_claude.push(*[Reply(status=500, headers={"retry-after-ms": "10"}) for _ in range(3)])
    out = planner.propose(ctx, 2)  # the toy task has a search space: the offline planner answers
    assert out and all(h.source == "search" for h in out) and "InternalServerError 500" in planner.degraded
    bare = ClaudePlanner(
        planner.llm,
        OfflinePlanner(
            ctx.task.spec.model_copy(update={"search": ctx.task.spec.search.model_copy(update={"space": {}})})
        ),
    )
    fake_claude.push(*[Reply(status=529, headers={"retry-after-ms": "10"}) for _ in range(3)])
    with pytest.raises(PlannerUnavailable, match="offline planner has nothing"):
        bare.propose(ctx, 1)
    assert all(c.error for c in planner.llm.take_calls())


def test_run_survives_an_api_outage(toy_repo: Path, fake_claude: Any) -> None:
    fake_claude.push(
        *[Reply(status=503, headers={"retry-after-ms": "10"}) for _ in range(3)], tool="propose_hypotheses"
    )
    _, ledger = _run(claude_task(toy_repo, trials=3, summarizer="rules"))
    trials = ledger.trials()
    assert len(trials) == 3 and trials[1].source == "search"  # the offline planner stood in
    assert any(
        c["error"].startswith("InternalServerError 503") or "503" in c["error"] for c in ledger.calls()
    )
    ledger.close()


def _history(n: int) -> list[Trial]:
    out = []
    for i in range(1, n + 1):
        h = Hypothesis(f"hypothesis number {i} about learning rate warmup and its schedule", "why " * 20)
        out.append(
            Trial(
                id=f"T{i:04d}",
                seq=i,
                title=h.title,
                source="anthropic",
                hypothesis=h,
                state=TrialState.DONE,
                decision=Decision.KEEP if i % 7 == 0 else Decision.DISCARD,
                parent_trial=f"T{max(1, i - 1):04d}",
                metric=0.5 + i / 1000,
                learning=f"learning {i % 40}: warmup of {i} steps changes the metric by {i / 1000}",
            )
        )
    return out


EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mil-stain"


def test_planner_input_stays_flat_as_the_run_grows(planner_bench: Any, fake_claude: Any) -> None:
    from slurm_autoresearch.playbook import generic_playbook

    planner, ctx, _ = planner_bench
    # The example's editable files and the generic playbook: the prompt of a realistic task.
    files = {name: (EXAMPLE / name).read_text() for name in ("train.py", "config.toml")}
    sizes = {}
    for n in (10, 200):
        trials = _history(n)
        planner.propose(PlanContext(ctx.task, trials, trials[-1], files, 10, playbook=generic_playbook()), 2)
        call = planner.llm.take_calls()[-1]
        sizes[n] = call.input_tokens + call.cache_write_tokens + call.cache_read_tokens
        if n == 200:
            cached = call.cache_read_tokens / sizes[n]
    assert sizes[200] <= 1.5 * sizes[10], sizes
    assert cached > 0.3  # the stable part came from the cache on the second call


def test_monitor_reads_a_bounded_tail_of_a_huge_log(tmp_path: Path) -> None:
    log = tmp_path / "train.log"
    with log.open("wb") as fh:
        fh.truncate(2**30)  # 1 GiB (sparse)
        fh.seek(2**30)
        fh.write(b"\nstep 900 loss nan\n")
    monitor = Monitor(tail_bytes=4096)
    start = time.perf_counter()
    seen = monitor.look("T0002", log)
    assert time.perf_counter() - start < 1.0
    assert monitor.bytes_read <= 4096 and seen.size > 2**30
    assert seen.rule == "loss is NaN or inf"
    assert monitor.look("T0002", log).rule is None  # a rule fires once per trial
    assert monitor.bytes_read <= 2 * 4096


def test_monitor_reports_a_stall() -> None:
    now = [0.0]
    monitor = Monitor(stall_s=60, clock=lambda: now[0])
    log = Path("/nonexistent/log")
    assert monitor.look("T1", log).rule is None
    now[0] = 61.0
    assert (monitor.look("T1", log).rule or "").startswith("stalled")


def test_model_summarizer_cancels_a_diverging_trial(toy_repo: Path, fake_claude: Any) -> None:
    (toy_repo / "config.toml").write_text("x = 0.5\ny = 2.0\nnan = false\nafter_sleep = 0.0\n")
    commit_all(toy_repo, "knobs")
    diverge = {
        "title": "diverge",
        "rationale": "r",
        "expected": "e",
        "risk": "high",
        "edits": [
            {
                "path": "config.toml",
                "search": "nan = false\nafter_sleep = 0.0\n",
                "replace": "nan = true\nafter_sleep = 60.0\n",
            }
        ],
    }
    fake_claude.push(Reply(tool_input={"hypotheses": [diverge]}), tool="propose_hypotheses")
    start = time.time()
    _, ledger = _run(claude_task(toy_repo, trials=2))
    trial = ledger.trial("T0002")
    assert trial is not None and trial.decision is Decision.CRASH
    assert trial.reason.startswith("cancelled by the monitor: diverging")
    assert time.time() - start < 40  # cancelled, not run for its 60 s
    assert any(e["kind"] == "health" for e in ledger.events())
    assert fake_claude.calls("report_health")
    ledger.close()


def test_summarizer_may_veto_a_keep_but_never_force_one(toy_repo: Path, fake_claude: Any) -> None:
    worse = {
        **CODE_EDIT,
        "title": "worse",
        "edits": [{"path": "config.toml", "search": "x = 0.5  # the x knob", "replace": "x = -4.0"}],
    }
    fake_claude.push(
        Reply(tool_input={"hypotheses": [CODE_EDIT]}),
        Reply(tool_input={"hypotheses": [worse]}),
        tool="propose_hypotheses",
    )
    judge = {"reason": "the evaluation read a truncated file", "summary": "s", "learning": "l"}
    fake_claude.push(
        Reply(),
        Reply(tool_input={**judge, "advice": "revert"}),
        Reply(tool_input={**judge, "advice": "keep"}),
        tool="judge_trial",
    )
    path = claude_task(toy_repo, '\n[decide]\nby = "summarizer"\n', trials=3)
    _, ledger = _run(path)
    trials = ledger.trials()
    assert trials[0].decision is Decision.KEEP  # the baseline cannot be vetoed
    assert trials[1].decision is Decision.DISCARD
    assert trials[1].reason == "reverted on the summarizer's advice: the evaluation read a truncated file"
    assert trials[2].decision is Decision.DISCARD  # advice to keep cannot beat the metric
    ledger.close()


def test_guidance_reaches_the_next_planning_call_once(toy_repo: Path, fake_claude: Any) -> None:
    controller = None

    def sleep(seconds: float) -> None:
        assert controller is not None
        if not controller.rundir.guidance.exists():
            controller.rundir.add_guidance("try a much larger x", time.time())
        time.sleep(min(seconds, 0.05))

    controller = launch(
        load_task(claude_task(toy_repo, trials=4, summarizer="rules")), echo=lambda _: None, sleep=sleep
    )
    controller.run()
    planned = [r["body"]["messages"][0]["content"] for r in fake_claude.calls("propose_hypotheses")]
    assert sum("try a much larger x" in text for text in planned) == 1
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    assert any(e["kind"] == "guidance-read" and "larger x" in e["detail"] for e in ledger.events())
    ledger.close()


def test_learnings_grow_the_playbook(toy_repo: Path, fake_claude: Any) -> None:
    (toy_repo / "playbook.md").write_text("# Toy playbook\n\nBe bold.\n")
    commit_all(toy_repo, "playbook")
    path = claude_task(toy_repo, "\n[playbook]\npersist = true\n", trials=3, summarizer="rules")
    path.write_text(
        path.read_text().replace(
            'eval = "python evaluate.py"', 'eval = "python evaluate.py"\nplaybook = "playbook.md"'
        )
    )
    controller, ledger = _run(path)
    ledger.close()
    run_copy = controller.rundir.playbook.read_text()
    persisted = (toy_repo / "playbook.md").read_text()
    assert run_copy.startswith("# Toy playbook") and "## Learnings" in run_copy
    assert persisted.count(controller.rundir.run_id) == 3 and "T0002" in persisted
    planned = fake_claude.calls("propose_hypotheses")[-1]["body"]["system"][0]["text"]
    assert (
        "Be bold." in planned
    )  # the planner reads the task's playbook; this run's learnings are its history


def test_llm_budget_stops_planning(toy_repo: Path, fake_claude: Any) -> None:
    path = claude_task(toy_repo, trials=10, summarizer="rules")
    path.write_text(path.read_text().replace("trials = 10", "trials = 10\nllm_usd = 0.000001"))
    _, ledger = _run(path)
    # The first round was planned while the baseline ran; its one call spent the budget, which the
    # controller saw before starting any of it: only the baseline ran.
    assert len(ledger.trials()) == 1
    assert len(ledger.calls()) == 1
    assert ledger.meta()["end_reason"].startswith("LLM budget spent")
    ledger.close()


def test_scrub_removes_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "my-very-own-key-1234")
    text = (
        "key my-very-own-key-1234 in log\nexport HF_TOKEN=hf_abcdefghijklmnop\npassword: hunter2\n"
        "sk-ant-api03-abcdefghijklmnopqrstuvwxyz0123 ghp_0123456789abcdefghijABCDEFGHIJ\n"
        "AKIAABCDEFGHIJKLMNOP step 10 loss 0.25"
    )
    clean = scrub(text)
    for secret in (
        "my-very-own-key-1234",
        "hf_abcdefghijklmnop",
        "hunter2",
        "sk-ant-api03",
        "ghp_0123",
        "AKIAABCDEFGHIJKLMNOP",
    ):
        assert secret not in clean
    assert "step 10 loss 0.25" in clean


def test_auto_uses_claude_only_with_a_key(toy_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    path = claude_task(toy_repo)
    path.write_text(
        path.read_text()
        .replace('planner = "anthropic"', 'planner = "auto"')
        .replace('summarizer = "anthropic"', 'summarizer = "auto"')
    )
    task = load_task(path)
    assert (task.planner, task.summarizer) == ("offline", "rules")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "k")
    task = load_task(path)
    assert (task.planner, task.summarizer) == ("anthropic", "anthropic")
    path.write_text(path.read_text() + '\n[models.prices."claude-opus-5-5"]\ninput = 1.0\noutput = 2.0\n')
    assert load_task(path).spec.models.prices["claude-opus-5-5"].output == 2.0
    unknown = path.read_text().replace("[models]\n", '[models]\nplanner = "claude-unknown-9"\n')
    path.write_text(unknown)
    from slurm_autoresearch.errors import TaskError

    with pytest.raises(TaskError, match="has no known price"):
        load_task(path)


def test_the_backlog_goes_before_claude(planner_bench: Any, fake_claude: Any, toy_repo: Path) -> None:
    planner, ctx, _ = planner_bench
    task = load_task(claude_task(toy_repo, '[[ideas]]\ntitle = "x to 2"\nconfig = { x = 2.0 }\n'))
    planner = ClaudePlanner(planner.llm, OfflinePlanner(task.spec))
    ctx = PlanContext(task, [], None, ctx.files, 10)
    fake_claude.push(Reply(tool_input={"hypotheses": [CODE_EDIT]}), tool="propose_hypotheses")
    out = planner.propose(ctx, 2)
    assert [h.source for h in out] == ["idea", "anthropic"]
    assert planner.propose(ctx, 1)[0].title == "x to 2"  # not yet tried: still first
    assert len(fake_claude.calls("propose_hypotheses")) == 1
