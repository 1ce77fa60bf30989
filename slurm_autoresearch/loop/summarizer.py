"""The summarizer: rules first, a cheap model only when a rule fires or a trial ends.

While a trial runs it returns a health check (ok, diverging, stalled, crashed) and an action
(continue, cancel); when the trial ends, keep-or-revert advice with a reason, a one-paragraph
summary and one learning line. Without a key, rules alone answer (a curve digest's flags join the
learning line); with one, the model reads the scrubbed log tail, the metric comparison and the
curve digest.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

from ..decide import Verdict
from ..digest import Digest
from ..llm import LLM, LLMUnavailable, scrub
from ..outcome import Outcome
from ..spec import TaskSpec
from ..trial import Decision, Trial


class Health(StrEnum):
    OK = "ok"
    DIVERGING = "diverging"
    STALLED = "stalled"
    CRASHED = "crashed"


@dataclass(frozen=True)
class Check:
    health: Health
    action: str  # continue | cancel
    note: str
    by: str


@dataclass(frozen=True)
class Judgement:
    advice: str  # keep | revert
    reason: str
    summary: str
    learning: str
    by: str


class Summarizer(Protocol):
    name: str

    def check(self, trial: Trial, tail: str, rule: str) -> Check: ...

    def judge(
        self,
        trial: Trial,
        outcome: Outcome,
        verdict: Verdict,
        incumbent: Trial | None,
        learning: str,
        curve: Digest | None = None,
    ) -> Judgement: ...


class RuleSummarizer:
    """No model: the rule that fired decides the health; the decision rule decides the advice."""

    name = "rules"

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    def check(self, trial: Trial, tail: str, rule: str) -> Check:
        if "NaN" in rule:
            return Check(Health.DIVERGING, "cancel", rule, self.name)
        if rule.startswith("stalled"):
            return Check(Health.STALLED, "cancel", rule, self.name)
        return Check(Health.CRASHED, "continue", rule, self.name)  # the process ends by itself

    def judge(
        self,
        trial: Trial,
        outcome: Outcome,
        verdict: Verdict,
        incumbent: Trial | None,
        learning: str,
        curve: Digest | None = None,
    ) -> Judgement:
        advice = "keep" if verdict.decision is Decision.KEEP else "revert"
        metric = f"{self.spec.metric.name} {outcome.metric:.6g}" if outcome.has_metric else "no metric"
        summary = f"{trial.title}: job {outcome.state.value}, {metric}; {verdict.reason}."
        note = curve.note() if curve is not None else ""
        if note:  # only where a flag says something: a clean curve adds nothing to the lesson
            summary += f" Curve: {note}."
            learning = f"{learning}; curve: {note}"
        return Judgement(advice, verdict.reason, summary, learning, self.name)


HEALTH_TOOL: dict[str, Any] = {
    "name": "report_health",
    "description": "Report the health of a running training job from its log tail.",
    "strict": True,
    "input_schema": {
        "type": "object",
        "properties": {
            "health": {"type": "string", "enum": [h.value for h in Health]},
            "action": {"type": "string", "enum": ["continue", "cancel"]},
            "note": {"type": "string"},
        },
        "required": ["health", "action", "note"],
        "additionalProperties": False,
    },
}

JUDGE_TOOL: dict[str, Any] = {
    "name": "judge_trial",
    "description": "Advise keep or revert for a finished trial, summarize it, and state one learning.",
    "strict": True,
    "input_schema": {
        "type": "object",
        "properties": {
            "advice": {"type": "string", "enum": ["keep", "revert"]},
            "reason": {"type": "string"},
            "summary": {"type": "string"},
            "learning": {"type": "string"},
        },
        "required": ["advice", "reason", "summary", "learning"],
        "additionalProperties": False,
    },
}

_SYSTEM = """\
You watch training jobs of an autonomous ML research loop and report tersely. Judge only from
what you are shown. A run whose result cannot be trusted (evaluation on truncated data, a
diverged run that got lucky, errors after the metric was written) should be reverted even if its
metric looks better. Notes and learnings are one line each."""


def _text(value: Any, limit: int) -> str:
    return " ".join(value.split())[:limit] if isinstance(value, str) else ""


class ClaudeSummarizer:
    """Rules first; the model adds judgement where a rule fired or a trial ended."""

    name = "anthropic"

    def __init__(self, llm: LLM, spec: TaskSpec) -> None:
        self.llm = llm
        self.spec = spec
        self.rules = RuleSummarizer(spec)

    def _call(self, tool: dict[str, Any], user: str, trial: str) -> Any:
        models = self.spec.models
        system = [{"type": "text", "text": _SYSTEM, "cache_control": {"type": "ephemeral"}}]
        result = self.llm.tool_call(
            role="summarizer",
            model=models.summarizer,
            system=system,
            user=user,
            tool=tool,
            max_tokens=models.summarizer_max_tokens,
            effort=models.summarizer_effort,
            trial=trial,
        )
        return result.input if result.stop_reason != "max_tokens" else None

    def check(self, trial: Trial, tail: str, rule: str) -> Check:
        fallback = self.rules.check(trial, tail, rule)
        user = (
            f"Trial {trial.id}: {trial.title}\nRule that fired: {rule}\n"
            f"LOG TAIL (last bytes of the job's log)\n{scrub(tail)}"
        )
        try:
            data = self._call(HEALTH_TOOL, user, trial.id)
        except LLMUnavailable:
            return fallback
        if (
            not isinstance(data, dict)
            or data.get("health") not in set(Health)
            or data.get("action") not in ("continue", "cancel")
        ):
            return fallback
        return Check(Health(data["health"]), data["action"], _text(data.get("note"), 200) or rule, self.name)

    def judge(
        self,
        trial: Trial,
        outcome: Outcome,
        verdict: Verdict,
        incumbent: Trial | None,
        learning: str,
        curve: Digest | None = None,
    ) -> Judgement:
        fallback = self.rules.judge(trial, outcome, verdict, incumbent, learning, curve)
        metric = self.spec.metric
        beats = verdict.decision is Decision.KEEP
        user = "\n".join(
            [
                f"Trial {trial.id}",
                f"Title: {trial.title}",
                f"Rationale: {trial.hypothesis.rationale[:500]}",
                f"Job state: {outcome.state.value} (exit code {outcome.exit_code}); {outcome.reason}",
                f"Metric {metric.name} ({'higher' if metric.goal == 'max' else 'lower'} is better): "
                f"{outcome.metric if outcome.has_metric else 'none'}; incumbent "
                f"{incumbent.metric if incumbent else 'none'}; margin {metric.min_delta:g}",
                f"Beats the incumbent by the margin: {'yes' if beats else 'no'}",
                *([f"Learning curves (value@step): {curve.line()}"] if curve is not None else []),
                "LOG TAIL",
                scrub(outcome.log_tail)[-4000:],
            ]
        )
        try:
            data = self._call(JUDGE_TOOL, user, trial.id)
        except LLMUnavailable:
            return fallback
        if not isinstance(data, dict) or data.get("advice") not in ("keep", "revert"):
            return fallback
        return Judgement(
            data["advice"],
            _text(data.get("reason"), 300) or fallback.reason,
            _text(data.get("summary"), 1200) or fallback.summary,
            _text(data.get("learning"), 200) or learning,
            self.name,
        )
