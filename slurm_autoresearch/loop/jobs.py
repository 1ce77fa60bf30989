"""A trial made into a job: its commit and worktree, its job file, and its submission to the executor."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Protocol

import git

from ..errors import EditError
from ..executors import Executor, JobSpec
from ..executors.base import JOB_FILE
from ..hypothesis import Edit
from ..ledger import Ledger
from ..rundir import RunDir, atomic_write_text, write_json
from ..safetext import error_line
from ..task import Task
from ..trial import Trial, TrialKind
from ..trials import Trials
from ..workspace import Materialized, Workspace
from .records import Records, RunLog


class Starter(Protocol):
    """What the referee and planning need of jobs: planned trials started (Jobs below)."""

    def start(
        self, rows: list[Trial], *, patch: str = "", fallbacks: Mapping[str, Trial] | None = None
    ) -> None: ...


class Jobs:
    """The workspace and the executor behind one door: what the loop, the referee and planning call
    to turn planned trials into running jobs."""

    def __init__(
        self,
        task: Task,
        rundir: RunDir,
        ledger: Ledger,
        trials: Trials,
        workspace: Workspace,
        executor: Executor,
        frozen: dict[str, str],
        records: Records,
        log: RunLog,
    ) -> None:
        self.task = task
        self.spec = task.spec
        self.rundir = rundir
        self.ledger = ledger
        self.trials = trials
        self.ws = workspace
        self.executor = executor
        self.frozen = frozen
        self.records = records
        self.log = log

    def start(
        self, rows: list[Trial], *, patch: str = "", fallbacks: Mapping[str, Trial] | None = None
    ) -> None:
        """Planned trials made into jobs and submitted together (one array on Slurm). `patch`: a
        promotion's diff (its screened trial's); `fallbacks`: what materialize() says."""
        found = fallbacks or {}
        made = (self.materialize(r, patch=patch, fallback=found.get(r.id)) for r in rows)
        specs = [s for s in made if s is not None]
        if specs:
            self.submit(specs)

    # -- the commit and the job file --------------------------------------------------------
    def materialize(self, trial: Trial, patch: str = "", fallback: Trial | None = None) -> JobSpec | None:
        """The trial's worktree and job file: its commit made from the hypothesis's edits, the merge
        of a combination, or (re-runs, promotions) the commit it re-runs. A hypothesis planned on an
        earlier incumbent (`fallback`) whose edits no longer apply is built on that one instead."""
        tdir = self.rundir.trial_dir(trial.id)
        tdir.mkdir(parents=True, exist_ok=True)
        h = trial.hypothesis
        write_json(tdir / "hypothesis.json", h.to_dict())
        assert trial.parent is not None
        try:
            if h.invalid:
                raise EditError(h.invalid)
            if trial.kind in (TrialKind.REPEAT, TrialKind.RERUN, TrialKind.PROMOTE):
                assert trial.commit is not None
                worktree, commit = self.ws.restore(trial.id, trial.commit), trial.commit
            elif trial.kind is TrialKind.COMBINE:
                made = self._combine(trial)
                worktree, commit, patch = made.worktree, made.commit, made.patch
            else:
                made = self._build(trial, fallback)
                worktree, commit, patch = made.worktree, made.commit, made.patch
        except EditError as exc:
            self._reject(trial, str(exc))
            return None
        except (OSError, UnicodeError, ValueError, git.GitCommandError) as exc:
            # Whatever a hypothesis makes git or the filesystem refuse ends that trial, not the run
            # (a failure of the ledger, ara's own state, is not caught here and stops it).
            self._reject(trial, f"could not be made into a commit: {error_line(exc)}")
            return None
        if patch or not (tdir / "patch.diff").exists():
            atomic_write_text(tdir / "patch.diff", patch)
        spec = self._job(trial, str(worktree))
        write_json(tdir / JOB_FILE, spec.to_dict())
        self.trials.materialized(trial, commit)
        return spec

    def _job(self, trial: Trial, worktree: str) -> JobSpec:
        s, task = self.spec, self.task
        full = trial.fidelity != "screen"
        return JobSpec(
            trial_id=trial.id,
            run_id=self.rundir.run_id,
            run_dir=str(self.rundir.path),
            trial_dir=str(self.rundir.trial_dir(trial.id)),
            worktree=worktree,
            workdir=task.workdir,
            command=s.task.command,
            eval=s.task.eval,
            metric=s.metric.name,
            metric_pattern=s.metric.pattern,
            steps=trial.steps or s.budget.steps,
            time_limit_s=s.budget.trial_minutes * 60,
            gpus=s.resources.gpus_per_trial,
            frozen=self.frozen,
            project=s.tracking.project or task.name,
            seed=trial.seed,
            title=trial.title,
            fidelity=trial.fidelity,
            wandb=s.tracking.wandb,
            holdout=s.task.holdout if full else None,
            pristine=str(self.rundir.frozen) if self.rundir.frozen.is_dir() else "",
            env=dict(s.task.env),
            pass_env=list(s.task.pass_env),
            hidden=[rel for rel in self.frozen if task.surface.is_hidden(rel)],
            sandbox=s.sandbox.mode,
            bwrap=s.sandbox.bwrap,
            network=s.sandbox.network,
            hide=s.sandbox.hide,
            writable=list(s.sandbox.writable),
            repo=str(task.repo),
            git_dir=str(self.ws.git_dir),
            cpus=s.resources.cpus_per_trial,
        )

    def _build(self, trial: Trial, fallback: Trial | None) -> Materialized:
        h = trial.hypothesis
        assert trial.parent is not None
        try:
            return self.ws.materialize(trial.id, trial.parent, list(h.edits), h.commit_message(trial.id))
        except EditError as exc:
            if fallback is None or fallback.commit is None:
                raise
            made = self.ws.materialize(trial.id, fallback.commit, list(h.edits), h.commit_message(trial.id))
            # Judged against the incumbent as any trial; a keep then queues its combination.
            why = f"edits do not apply to the incumbent ({exc}); built on {fallback.id}, as planned"
            self.trials.rebased(trial, fallback, why)
            self.log(f"{trial.id} {why}")
            return made

    def _combine(self, trial: Trial) -> Materialized:
        """git merge of the two commits; where lines next to each other conflict, the other's own
        search/replace edits applied to the base (they fail where both changed the same text)."""
        h = trial.hypothesis
        assert trial.parent is not None
        message = h.commit_message(trial.id)
        try:
            return self.ws.combine(trial.id, trial.parent, h.extra["other"], message)
        except EditError as conflict:
            edits = [Edit(**e) for e in h.extra.get("edits", [])]
            if not edits:
                raise
            try:
                return self.ws.materialize(trial.id, trial.parent, edits, message)
            except EditError:
                raise conflict from None

    def _reject(self, trial: Trial, reason: str) -> None:
        self.trials.rejected(trial, reason)
        self.log(f"{trial.id} rejected: {trial.title}: {reason}")
        self.records.trial(trial, None)

    # -- submission ---------------------------------------------------------------------------
    def submit(self, specs: list[JobSpec]) -> None:
        """Record the intent first: a controller that dies inside sbatch finds the job on resume."""
        trials = {}
        for spec in specs:
            trial = self.ledger.trial(spec.trial_id)
            assert trial is not None
            trials[spec.trial_id] = self.trials.submitting(trial)
        ids = self.executor.submit(specs)
        for spec in specs:
            job_id = ids.get(spec.trial_id, "")
            trial = trials[spec.trial_id]
            if job_id:
                self.submitted(trial, job_id)
            else:
                self.log(f"{trial.id} not submitted yet (the scheduler refused it); retrying with backoff")

    def submitted(self, trial: Trial, job_id: str) -> None:
        self.trials.submitted(trial, job_id)
        self.log(f"{trial.id} submitted ({job_id}): {trial.title}")

    def job_spec(self, trial: Trial) -> JobSpec | None:
        """The trial's job as written when it was materialized (its worktree made again if gone)."""
        path = self.rundir.trial_dir(trial.id) / JOB_FILE
        if trial.commit is None or not path.exists():
            return None
        self.ws.restore(trial.id, trial.commit)
        return JobSpec.from_dict(json.loads(path.read_text(encoding="utf-8")))
