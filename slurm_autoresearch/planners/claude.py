"""Claude planner: open-ended hypotheses (code and configuration) as structured output.

Model output is untrusted: each hypothesis is checked here for shape and size, then the workspace
checks every edit against the edit surface; a bad one is rejected with its reason and the rest of
the batch goes on. When the API fails after the SDK's retries, the round falls back to the
offline planner, or pauses when that has nothing to offer.
"""

from __future__ import annotations

import re
from typing import Any

from ..hypothesis import Edit, Hypothesis
from ..llm import LLM, LLMUnavailable
from ..safetext import storable, visible
from .base import PlanContext, PlannerUnavailable
from .offline import OfflinePlanner
from .prompt import PROPOSE_TOOL, system_blocks, user_text

MAX_TITLE = 120
MAX_TEXT = 4000
MAX_EDITS = 20
_SHELL = re.compile(r"[;&|`$<>\\\n\r\t\x00-\x1f]")


class ClaudePlanner:
    name = "anthropic"

    def __init__(self, llm: LLM, fallback: OfflinePlanner) -> None:
        self.llm = llm
        self.fallback = fallback
        self.degraded = ""  # why the last round fell back, for the controller's log

    def baseline(self, files: dict[str, str]) -> Hypothesis:
        return self.fallback.baseline(files)

    def propose(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        backlog = self.fallback.backlog(ctx, n)  # the researcher's own ideas go first
        if len(backlog) >= n:
            return backlog
        return backlog + self._ask(ctx, n - len(backlog))

    def _ask(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        models = ctx.task.spec.models
        try:
            result = self.llm.tool_call(
                role="planner",
                model=models.planner,
                system=system_blocks(ctx),
                user=user_text(ctx, n),
                tool=PROPOSE_TOOL,
                max_tokens=models.planner_max_tokens,
                effort=models.planner_effort,
            )
        except LLMUnavailable as exc:
            self.degraded = str(exc)
            fallback = self.fallback.propose(ctx, n)
            if not fallback:
                raise PlannerUnavailable(
                    f"planner API unavailable ({exc}) and the offline planner has nothing to offer"
                ) from None
            return fallback
        self.degraded = ""
        return parse_batch(result.input, result.stop_reason, ctx, n, self.llm.models.planner_max_tokens)


def parse_batch(data: Any, stop_reason: str, ctx: PlanContext, n: int, max_tokens: int) -> list[Hypothesis]:
    """Hypotheses from the tool input; one rejected placeholder when the whole answer is unusable."""
    if stop_reason == "max_tokens":
        return [_unusable(f"planner response truncated at max_tokens ({max_tokens})")]
    if not isinstance(data, dict) or not isinstance(data.get("hypotheses"), list):
        return [_unusable("planner response is not a propose_hypotheses call with a hypotheses list")]
    items = data["hypotheses"]
    if not items:
        return []
    tried = {t.title for t in ctx.trials} | {h.title for h in ctx.queued}
    out: list[Hypothesis] = []
    for item in items[:n]:
        hypothesis = parse_hypothesis(item, ctx.task.spec.surface.max_file_kb * 1024)
        if not hypothesis.invalid and hypothesis.title in tried | {h.title for h in out}:
            hypothesis = Hypothesis(hypothesis.title, source="anthropic", invalid="already tried in this run")
        out.append(hypothesis)
    return out


def _unusable(reason: str) -> Hypothesis:
    return Hypothesis("(unusable planner response)", source="anthropic", invalid=reason)


def parse_hypothesis(item: Any, max_bytes: int) -> Hypothesis:
    """One proposal checked for shape, size and safe text; path safety is the workspace's job."""
    if not isinstance(item, dict):
        return Hypothesis("(malformed hypothesis)", source="anthropic", invalid="hypothesis is not an object")
    title = item.get("title")
    shown = title[:MAX_TITLE] if isinstance(title, str) and title.strip() else "(untitled hypothesis)"
    shown = _SHELL.sub("?", visible(shown, keep=""))

    def bad(reason: str) -> Hypothesis:
        return Hypothesis(shown, source="anthropic", invalid=reason)

    if not isinstance(title, str) or not title.strip():
        return bad("missing title")
    if len(title) > MAX_TITLE:
        return bad(f"title longer than {MAX_TITLE} characters")
    if _SHELL.search(title):
        return bad("title contains shell metacharacters or control characters")
    if visible(title, keep="") != title:
        return bad("title contains control, bidi or invisible characters")
    texts = {k: item.get(k, "") for k in ("rationale", "expected", "risk")}
    for key, value in texts.items():
        if not isinstance(value, str):
            return bad(f"{key} is not text")
        if len(value) > MAX_TEXT:
            return bad(f"{key} longer than {MAX_TEXT} characters")
        texts[key] = storable(value)
    edits = item.get("edits")
    if not isinstance(edits, list) or not edits:
        return bad("no edits")
    if len(edits) > MAX_EDITS:
        return bad(f"{len(edits)} edits (at most {MAX_EDITS})")
    parsed = []
    for k, edit in enumerate(edits, 1):
        if not isinstance(edit, dict) or not all(
            isinstance(edit.get(f), str) for f in ("path", "search", "replace")
        ):
            return bad(f"edit {k} is not {{path, search, replace}} text")
        if len(edit["search"]) > max_bytes or len(edit["replace"]) > max_bytes:
            return bad(f"edit {k} is larger than the {max_bytes} byte file limit")
        parsed.append(Edit(edit["path"], edit["search"], edit["replace"]))
    return Hypothesis(
        title.strip(),
        texts["rationale"],
        texts["expected"],
        tuple(parsed),
        source="anthropic",
        extra={"risk": texts["risk"]},
    )
