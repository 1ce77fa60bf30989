"""Hypothesis: a planner's proposal (title, rationale, expected effect, search/replace edits)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Edit:
    """One search/replace block on a workdir-relative path; empty search creates a new file."""

    path: str
    search: str
    replace: str


def line_matches(text: str, search: str) -> list[int]:
    """Offsets where `search` occurs as whole lines: starting at a line's start, ending at one's end."""
    found, start = [], text.find(search)
    while start >= 0:
        end = start + len(search)
        at_start = start == 0 or text[start - 1] == "\n"
        at_end = search.endswith("\n") or end == len(text) or text[end] in "\r\n"
        if at_start and at_end:
            found.append(start)
        start = text.find(search, start + 1)
    return found


def whole_line_problem(text: str, search: str) -> str | None:
    """Why `search` may not be replaced in `text`, or None when it matches whole lines exactly once.

    A block that matched mid-line (4 spaces of indent where the code has 8) would be applied and
    the trial would crash with an IndentationError; refusing it keeps the mistake a `rejected`.
    """
    whole = line_matches(text, search)
    if len(whole) == 1:
        return None
    if whole:
        return f"search text found {len(whole)} times (must match exactly once)"
    inside = text.count(search)
    if inside:
        line = text[: text.find(search)].count("\n") + 1
        return (
            f"search text occurs only inside a line (line {line}); a search block must begin at the "
            "start of a line and end at the end of one (copy whole lines, with their indentation)"
        )
    return "search text not found (must match whole lines exactly once)"


@dataclass(frozen=True)
class Hypothesis:
    """What to try and why. `params` holds the search-space values when the change is a config.

    `invalid` carries the reason a proposal cannot even be turned into edits (the trial is then
    recorded as rejected with that reason, like any other bad edit).
    """

    title: str
    rationale: str = ""
    expected: str = ""
    edits: tuple[Edit, ...] = ()
    params: dict[str, Any] | None = None
    source: str = "search"
    invalid: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def baseline(cls, params: dict[str, Any] | None = None) -> Hypothesis:
        return cls(
            title="baseline",
            rationale="The unchanged code at the start of the run; every later trial is compared to it.",
            params=params,
            source="baseline",
        )

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["edits"] = [asdict(e) for e in self.edits]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Hypothesis:
        data = dict(data)
        data["edits"] = tuple(Edit(**e) for e in data.get("edits", ()))
        return cls(**data)

    def commit_message(self, trial_id: str) -> str:
        lines = [f"{trial_id}: {self.title}"[:200], ""]
        if self.rationale:
            lines += [self.rationale, ""]
        if self.expected:
            lines += [f"Expected: {self.expected}", ""]
        lines.append(f"Ara-Trial: {trial_id}")
        return "\n".join(lines)
