"""Offline planner: the user's idea backlog first, then Optuna TPE over `[search.space]`.

Every proposal is an ordinary edit (a line of the config file), so every trial is a commit.
The study is rebuilt from the ledger's history before each ask, so the planner holds no state
that a restarted controller could lose.
"""

from __future__ import annotations

import contextlib
import math
import tomllib
from dataclasses import replace
from typing import Any, Literal

from ..config_file import lookup, set_value
from ..hypothesis import Edit, Hypothesis
from ..spec import IdeaSpec, ParamSpec, TaskSpec
from ..trial import Decision, Trial
from .base import PlanContext

_RESAMPLE_TRIES = 25


def _round(value: float, spec: ParamSpec) -> float:
    """Three significant digits: readable diffs, and TPE's near-duplicates become exact ones."""
    # A choice is taken as written: rounded, it would be no choice at all.
    if spec.choices is not None or spec.step is not None or value == 0:
        return value
    assert spec.low is not None and spec.high is not None  # a range has both (ParamSpec._shape)
    rounded = float(f"{value:.3g}")
    return min(max(rounded, float(spec.low)), float(spec.high))


class OfflinePlanner:
    name = "offline"

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    # -- config helpers ---------------------------------------------------------------------
    def _config(self, files: dict[str, str]) -> tuple[str, dict[str, Any]] | None:
        path = self.spec.search.config
        if not path or path not in files:
            return None
        text = files[path]
        try:
            return text, tomllib.loads(text)
        except tomllib.TOMLDecodeError:
            return None

    def _params(self, config: dict[str, Any]) -> dict[str, Any]:
        return {key: lookup(config, key) for key in self.spec.search.space}

    def baseline(self, files: dict[str, str]) -> Hypothesis:
        parsed = self._config(files)
        return Hypothesis.baseline(self._params(parsed[1]) if parsed and self.spec.search.space else None)

    def _config_edits(self, text: str, values: dict[str, Any]) -> tuple[Edit, ...]:
        """One search/replace block per changed key, each against the text the previous left."""
        assert self.spec.search.config
        edits = []
        for key, value in values.items():
            search, replace = set_value(text, key, value)
            if search == replace:
                continue
            edits.append(Edit(self.spec.search.config, search, replace))
            text = text.replace(search, replace, 1)
        return tuple(edits)

    # -- proposals --------------------------------------------------------------------------
    def propose(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        out = self.backlog(ctx, n)
        if len(out) < n and self.spec.search.space:
            out += self._sample(ctx, n - len(out), out)
        return out

    def backlog(self, ctx: PlanContext, n: int) -> list[Hypothesis]:
        """The researcher's untried ideas, in order: they come before anything sampled or generated."""
        tried = {t.title for t in ctx.trials} | {h.title for h in ctx.queued}
        out: list[Hypothesis] = []
        for idea in self.spec.ideas:
            if len(out) == n:
                break
            if idea.title not in tried:
                out.append(self._idea(idea, ctx))
        return out

    def _idea(self, idea: IdeaSpec, ctx: PlanContext) -> Hypothesis:
        edits = tuple(Edit(e.path, e.search, e.replace) for e in idea.edits)
        params = None
        if idea.config:
            parsed = self._config(ctx.files)
            if parsed is None:
                return Hypothesis(
                    idea.title,
                    idea.rationale,
                    source="idea",
                    invalid=f"config file {self.spec.search.config} is not readable at the incumbent",
                )
            text, config = parsed
            try:
                edits = self._config_edits(text, dict(idea.config)) + edits
            except ValueError as exc:
                return Hypothesis(idea.title, idea.rationale, source="idea", invalid=str(exc))
            if not idea.edits and self.spec.search.space:
                params = {
                    **self._params(config),
                    **{k: v for k, v in idea.config.items() if k in self.spec.search.space},
                }
        return Hypothesis(
            idea.title,
            idea.rationale,
            expected="from the idea backlog",
            edits=edits,
            params=params,
            source="idea",
            # config values alone can be set again on a newer incumbent (see `refresh`)
            extra={"config": dict(idea.config)} if idea.config and not idea.edits else {},
        )

    def refresh(self, h: Hypothesis, files: dict[str, str]) -> Hypothesis | None:
        """The same config change made against newer files (an incumbent that changed since it was
        planned); None when it is not a config change or cannot be made there."""
        values = h.extra.get("config")
        parsed = self._config(files)
        if not values or parsed is None:
            return None
        text, config = parsed
        try:
            edits = self._config_edits(text, dict(values))
        except ValueError:
            return None
        params = {**self._params(config), **values} if h.params is not None else None
        return replace(h, edits=edits, params=params)

    def _sample(self, ctx: PlanContext, n: int, planned: list[Hypothesis]) -> list[Hypothesis]:
        import optuna  # imported only when sampling: it is slow to import

        optuna.logging.set_verbosity(optuna.logging.WARNING)

        parsed = self._config(ctx.files)
        if parsed is None:
            return []
        text, config = parsed
        space = self.spec.search.space
        dists = {key: _distribution(optuna, spec) for key, spec in space.items()}
        direction: Literal["maximize", "minimize"] = (
            "maximize" if self.spec.metric.goal == "max" else "minimize"
        )
        sampler = optuna.samplers.TPESampler(
            seed=self.spec.planner.seed + len(ctx.trials),
            n_startup_trials=self.spec.search.startup_trials,
            constant_liar=True,
        )
        study = optuna.create_study(direction=direction, sampler=sampler)
        seen: list[dict[str, Any]] = []
        for trial in ctx.trials:
            params = trial.hypothesis.params
            if not params or set(params) != set(space):
                continue
            seen.append(params)
            _tell(optuna, study, trial, params, dists)
        seen += [h.params for h in (*ctx.queued, *planned) if h.params]

        incumbent = self._params(config)
        out: list[Hypothesis] = []
        for _ in range(n):
            for _attempt in range(_RESAMPLE_TRIES):
                asked = study.ask(dists)
                params = {
                    k: _round(v, space[k]) if isinstance(v, float) else v for k, v in asked.params.items()
                }
                if params not in seen:
                    break
                study.tell(asked, state=optuna.trial.TrialState.FAIL)
            else:
                return out  # the space is exhausted around what has been tried
            seen.append(params)
            changed = [f"{k}={_show(v)}" for k, v in params.items() if v != incumbent.get(k)]
            title = _title(changed)
            try:
                edits = self._config_edits(text, params)
            except ValueError as exc:
                out.append(Hypothesis(title, source="search", params=params, invalid=str(exc)))
                continue
            out.append(
                Hypothesis(
                    title,
                    rationale=f"TPE sample {len(seen)} over {len(space)} keys of {self.spec.search.config}, "
                    f"told {len(ctx.trials)} earlier trials.",
                    expected=f"{self.spec.metric.name} moves towards {self.spec.metric.goal}",
                    edits=edits,
                    params=params,
                    source="search",
                    extra={"config": params},
                )
            )
        return out


def _title(changes: list[str], shown: int = 4) -> str:
    """`set a=1, b=2, c=3, d=4 (+2 more)`: short enough for a table, the diff has the rest."""
    if not changes:
        return "re-run"
    more = f" (+{len(changes) - shown} more)" if len(changes) > shown else ""
    return "set " + ", ".join(changes[:shown]) + more


def _show(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _distribution(optuna: Any, spec: ParamSpec) -> Any:
    if spec.choices is not None:
        return optuna.distributions.CategoricalDistribution(list(spec.choices))
    assert spec.low is not None and spec.high is not None  # a range has both (ParamSpec._shape)
    if spec.is_int:
        return optuna.distributions.IntDistribution(
            int(spec.low),
            int(spec.high),
            log=spec.log,
            step=int(spec.step or 1),
        )
    return optuna.distributions.FloatDistribution(
        float(spec.low),
        float(spec.high),
        log=spec.log,
        step=spec.step,
    )


def _tell(optuna: Any, study: Any, trial: Trial, params: dict[str, Any], dists: dict[str, Any]) -> None:
    """Add one ledger trial to the study; values outside the space are skipped, not fatal."""
    TrialState = optuna.trial.TrialState
    if (
        trial.decision in (Decision.KEEP, Decision.DISCARD)
        and trial.metric is not None
        and math.isfinite(trial.metric)
    ):
        state, value = TrialState.COMPLETE, trial.metric
    elif trial.decision is None:
        state, value = TrialState.RUNNING, None  # pending: constant_liar keeps TPE away from it
    else:
        state, value = TrialState.FAIL, None
    with contextlib.suppress(ValueError):
        study.add_trial(
            optuna.trial.create_trial(state=state, value=value, params=params, distributions=dists)
        )
