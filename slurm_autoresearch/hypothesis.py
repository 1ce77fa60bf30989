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
