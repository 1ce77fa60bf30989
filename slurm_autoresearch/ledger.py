"""The ledger: SQLite in the run directory, schema by a plain list of migrations, one writer.

Over 400 lines: every SQL statement of ara lives here and nowhere else, by design, as named
questions (`runs_of`, `decided_ideas`, `spending`...) that readers of 10,000 trials can afford.
Trial rows are written only by `trials.Trials`, through the private `_write`.
"""

from __future__ import annotations

import functools
import json
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .budget import Spending
from .hypothesis import Hypothesis
from .rundir import atomic_write_text
from .safetext import storable
from .trial import Decision, Trial, TrialKind, TrialState, trial_id

if TYPE_CHECKING:  # llm imports the task spec (pydantic): readers of the ledger need neither
    from .llm import Call

# Append only: never edit a migration that has shipped; add the next one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE trials (
        id TEXT PRIMARY KEY,
        seq INTEGER NOT NULL UNIQUE,
        title TEXT NOT NULL,
        source TEXT NOT NULL,
        hypothesis TEXT NOT NULL,
        state TEXT NOT NULL,
        parent TEXT,
        parent_trial TEXT,
        commit_sha TEXT,
        job_id TEXT,
        job_state TEXT,
        decision TEXT,
        reason TEXT NOT NULL DEFAULT '',
        metric REAL,
        metrics TEXT,
        elapsed REAL,
        gpu_seconds REAL,
        memory_gb REAL,
        learning TEXT NOT NULL DEFAULT '',
        created_at REAL NOT NULL,
        submitted_at REAL,
        started_at REAL,
        finished_at REAL,
        decided_at REAL
    );
    CREATE TABLE events (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        trial TEXT,
        kind TEXT NOT NULL,
        detail TEXT NOT NULL DEFAULT ''
    );
    """,
    # 2: where and when the scheduler ran the job (sacct's NodeList, Start, End)
    """
    ALTER TABLE trials ADD COLUMN node TEXT;
    ALTER TABLE trials ADD COLUMN job_started_at REAL;
    ALTER TABLE trials ADD COLUMN job_ended_at REAL;
    """,
    # 3: model calls (never prompts or headers) and what each trial cost in tokens and dollars
    """
    CREATE TABLE llm_calls (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        role TEXT NOT NULL,
        model TEXT NOT NULL,
        trial TEXT,
        input_tokens INTEGER NOT NULL,
        output_tokens INTEGER NOT NULL,
        cache_write_tokens INTEGER NOT NULL,
        cache_read_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        request_bytes INTEGER NOT NULL,
        duration_s REAL NOT NULL,
        stop_reason TEXT NOT NULL DEFAULT '',
        error TEXT NOT NULL DEFAULT ''
    );
    ALTER TABLE trials ADD COLUMN summary TEXT NOT NULL DEFAULT '';
    ALTER TABLE trials ADD COLUMN llm_usd REAL NOT NULL DEFAULT 0;
    ALTER TABLE trials ADD COLUMN llm_tokens INTEGER NOT NULL DEFAULT 0;
    """,
    # 4: durability: submissions per trial (infrastructure retries) and why a job is still pending
    """
    ALTER TABLE trials ADD COLUMN attempts INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE trials ADD COLUMN pending_reason TEXT NOT NULL DEFAULT '';
    """,
    # 5: decisions on evidence: repeats with seeds, two fidelities, combinations, holdout metrics
    """
    ALTER TABLE trials ADD COLUMN kind TEXT NOT NULL DEFAULT 'hypothesis';
    ALTER TABLE trials ADD COLUMN of_trial TEXT;
    ALTER TABLE trials ADD COLUMN seed INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE trials ADD COLUMN steps INTEGER;
    ALTER TABLE trials ADD COLUMN fidelity TEXT NOT NULL DEFAULT 'full';
    ALTER TABLE trials ADD COLUMN round INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE trials ADD COLUMN evidence TEXT;
    ALTER TABLE trials ADD COLUMN holdout REAL;
    UPDATE trials SET kind = 'baseline' WHERE seq = 1;
    """,
]

_BUDGET_KINDS = str(tuple(k.value for k in TrialKind if k.counts_against_budget()))  # SQL: ('a', 'b')
_IDEA_KINDS = str(tuple(k.value for k in TrialKind if k.counts_against_budget() or k is TrialKind.PROMOTE))
_COLUMNS = {  # Trial attribute -> column, where they differ
    "commit": "commit_sha",
    "of": "of_trial",
}


class Ledger:
    """Durable record of a run. Writers commit every change at once; readers open read-only."""

    def __init__(self, conn: sqlite3.Connection, path: Path) -> None:
        self.conn = conn
        self.path = path

    @classmethod
    def open(cls, path: Path, *, readonly: bool = False) -> Ledger:
        if readonly:
            conn = _reader(path)
        else:
            conn = sqlite3.connect(path, timeout=30)
            # Run directories live on NFS, where WAL's shared memory does not work.
            conn.execute("PRAGMA journal_mode=DELETE")
            conn.execute("PRAGMA synchronous=FULL")
        conn.row_factory = sqlite3.Row
        ledger = cls(conn, path)
        if not readonly:
            ledger.migrate()
        return ledger

    def close(self) -> None:
        self.conn.close()

    def migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            with self._tx():
                for statement in filter(str.strip, script.split(";")):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {number}")

    @contextmanager
    def _tx(self) -> Iterator[None]:
        with self.conn:
            yield

    # -- meta -------------------------------------------------------------------------------
    def set_meta(self, **values: Any) -> None:
        with self._tx():
            for key, value in values.items():
                self.conn.execute(
                    "INSERT INTO meta(key, value) VALUES(?, ?) "
                    "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                    (key, json.dumps(value)),
                )

    def meta(self) -> dict[str, Any]:
        return {r["key"]: json.loads(r["value"]) for r in self.conn.execute("SELECT key, value FROM meta")}

    # -- trials -----------------------------------------------------------------------------
    def add_trial(
        self,
        hypothesis: Hypothesis,
        *,
        parent: str,
        parent_trial: str | None,
        now: float,
        kind: TrialKind = TrialKind.HYPOTHESIS,
        of: str | None = None,
        commit: str | None = None,
        seed: int = 0,
        steps: int | None = None,
        fidelity: str = "full",
        round: int = 0,
    ) -> Trial:
        with self._tx():
            seq = self.conn.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM trials").fetchone()[0]
            trial = Trial(
                id=trial_id(seq),
                seq=seq,
                title=hypothesis.title,
                source=hypothesis.source,
                hypothesis=hypothesis,
                parent=parent,
                parent_trial=parent_trial,
                created_at=now,
                kind=kind,
                of=of,
                commit=commit,
                seed=seed,
                steps=steps,
                fidelity=fidelity,
                round=round,
            )
            self.conn.execute(
                "INSERT INTO trials(id, seq, title, source, hypothesis, state, parent, parent_trial, "
                "created_at, kind, of_trial, commit_sha, seed, steps, fidelity, round) "
                "VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    trial.id,
                    seq,
                    storable(trial.title),
                    storable(trial.source),
                    json.dumps(hypothesis.to_dict()),
                    str(trial.state),
                    parent,
                    parent_trial,
                    now,
                    str(kind),
                    of,
                    commit,
                    seed,
                    steps,
                    fidelity,
                    round,
                ),
            )
            self._event(now, trial.id, "planned", f"{kind}: {trial.title}" if of else trial.title)
        return trial

    def _write(
        self, trial: Trial, now: float, event: str, detail: str | None, fields: dict[str, Any]
    ) -> Trial:
        """Set fields on the trial and its row, with the step's event, in one transaction. Private:
        `trials.Trials` is its one caller, which checks that the step is legal first."""
        for key, value in fields.items():
            if key not in Trial.__dataclass_fields__:
                raise AttributeError(f"{trial.id}: a trial has no field {key!r}")
            setattr(trial, key, value)
        columns = [_COLUMNS.get(k, k) for k in fields]
        values = [_to_db(v) for v in fields.values()]
        with self._tx():
            self.conn.execute(
                f"UPDATE trials SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                (*values, trial.id),
            )
            if event:  # always, but for fixtures that write a finished history
                detail = str(fields.get("reason", fields.get("state", ""))) if detail is None else detail
                self._event(now, trial.id, event, detail)
        return trial

    def state_of(self, tid: str) -> TrialState | None:
        """The trial's state as recorded (a Trial in memory may be an older copy)."""
        row = self.conn.execute("SELECT state FROM trials WHERE id = ?", (tid,)).fetchone()
        return _STATES[row[0]] if row else None

    def event(self, now: float, kind: str, detail: str = "", trial: str | None = None) -> None:
        with self._tx():
            self._event(now, trial, kind, detail)

    def _event(self, now: float, trial: str | None, kind: str, detail: str) -> None:
        self.conn.execute(
            "INSERT INTO events(at, trial, kind, detail) VALUES(?, ?, ?, ?)",
            (now, trial, kind, storable(detail)),
        )

    # -- model calls ------------------------------------------------------------------------
    def add_calls(self, calls: list[Call], shares: list[str] | None = None) -> None:
        """Record calls; a call's tokens and cost go to its trial, or are split over `shares`."""
        with self._tx():
            for call in calls:
                self.conn.execute(
                    "INSERT INTO llm_calls(at, role, model, trial, input_tokens, output_tokens, "
                    "cache_write_tokens, cache_read_tokens, cost_usd, request_bytes, duration_s, "
                    "stop_reason, error) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        call.at,
                        call.role,
                        call.model,
                        call.trial,
                        call.input_tokens,
                        call.output_tokens,
                        call.cache_write_tokens,
                        call.cache_read_tokens,
                        call.cost_usd,
                        call.request_bytes,
                        call.duration_s,
                        call.stop_reason,
                        call.error,
                    ),
                )
                owners = [call.trial] if call.trial else list(shares or [])
                for owner in owners:
                    self._charge(owner, call.cost_usd / len(owners), call.tokens // len(owners))

    def charge(self, trial: str, usd: float, tokens: int) -> None:
        """A trial's share of calls recorded earlier (a planner answer that became several trials)."""
        with self._tx():
            self._charge(trial, usd, tokens)

    def _charge(self, trial: str, usd: float, tokens: int) -> None:
        self.conn.execute(
            "UPDATE trials SET llm_usd = llm_usd + ?, llm_tokens = llm_tokens + ? WHERE id = ?",
            (usd, tokens, trial),
        )

    def calls(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM llm_calls ORDER BY id")]

    def llm_totals(self) -> tuple[float, int]:
        """Dollars and tokens (input, output, cache writes and reads) of every call so far."""
        row = self.conn.execute(
            "SELECT COALESCE(SUM(cost_usd), 0), COALESCE(SUM(input_tokens + output_tokens "
            "+ cache_write_tokens + cache_read_tokens), 0) FROM llm_calls"
        ).fetchone()
        return float(row[0]), int(row[1])

    def trials(self, *, light: bool = False) -> list[Trial]:
        """Every trial in order. light: for readers that show rows (status, watch, exports) the
        hypothesis is its title only and the other metrics are not parsed."""
        return self._select("1", light=light)

    def _select(self, where: str, params: tuple[Any, ...] = (), *, light: bool = True) -> list[Trial]:
        """Trials matching an SQL condition, in order: readers of big ledgers take what they show."""
        cur = self.conn.cursor()
        cur.row_factory = None  # plain tuples zipped with the column names: faster than Row
        cur.execute(f"SELECT * FROM trials WHERE {where} ORDER BY seq", params)
        names = [c[0] for c in cur.description]
        return [_trial(dict(zip(names, r, strict=True)), light) for r in cur]

    def tally(self) -> dict[str, Any]:
        """Counts and sums over all trials, in SQL: what a one-screen view needs of 10,000 rows."""
        one = self.conn.execute(
            "SELECT COUNT(*), COUNT(job_id), COALESCE(SUM(gpu_seconds), 0), "
            "SUM(kind IN ('baseline', 'hypothesis')), MAX(seq) FROM trials"
        ).fetchone()
        decisions = dict(
            self.conn.execute("SELECT decision, COUNT(*) FROM trials GROUP BY decision").fetchall()
        )
        states = dict(self.conn.execute("SELECT state, COUNT(*) FROM trials GROUP BY state").fetchall())
        kinds = dict(self.conn.execute("SELECT kind, COUNT(*) FROM trials GROUP BY kind").fetchall())
        return {
            "trials": one[0],
            "jobs": one[1],
            "gpu_seconds": float(one[2]),
            "hypotheses": int(one[3] or 0),
            "last_seq": one[4] or 0,
            "decisions": {str(d): decisions.get(str(d), 0) for d in Decision},
            "states": {str(s): states.get(str(s), 0) for s in TrialState},
            "kinds": {str(k): kinds.get(str(k), 0) for k in TrialKind},
        }

    def hypotheses(self) -> int:
        """What budget.trials counts (the baseline and planned hypotheses), in SQL."""
        row = self.conn.execute(f"SELECT COUNT(*) FROM trials WHERE kind IN {_BUDGET_KINDS}").fetchone()
        return int(row[0])

    def spending(self, window: int) -> Spending:
        """What the budgets are checked against, without parsing a trial: the controller asks every
        poll. `window`: how many of the latest decided ideas are looked at for a failure streak."""
        hyps, gpu = self.conn.execute(
            f"SELECT COALESCE(SUM(kind IN {_BUDGET_KINDS}), 0), COALESCE(SUM(gpu_seconds), 0) FROM trials"
        ).fetchone()
        # Ideas that failed, not a combination git could not merge or a re-run of a flaky commit.
        latest = self.conn.execute(
            f"SELECT decision FROM trials WHERE decided_at IS NOT NULL AND kind IN {_IDEA_KINDS} "
            "ORDER BY decided_at DESC, seq DESC LIMIT ?",
            (window,),
        ).fetchall()
        streak = 0
        for (decision,) in latest:
            if not (decision and Decision(decision).is_failure()):
                break
            streak += 1
        usd, tokens = self.llm_totals()
        return Spending(int(hyps), float(gpu), streak, usd, tokens)

    def awaits_evidence(self, tid: str) -> bool:
        """Whether re-runs of this trial (repeats, reruns) are still undecided: one SQL query,
        where the referee would otherwise parse every trial for each waiting one."""
        row = self.conn.execute(
            "SELECT 1 FROM trials WHERE of_trial = ? AND kind IN ('repeat', 'rerun') "
            "AND state != 'done' LIMIT 1",
            (tid,),
        ).fetchone()
        return row is not None

    def incumbent(self) -> Trial | None:
        """The last trial kept."""
        row = self.conn.execute(
            "SELECT id FROM trials WHERE decision = 'keep' ORDER BY decided_at DESC, seq DESC LIMIT 1"
        ).fetchone()
        return self.trial(row[0]) if row else None

    def measured(self, *commits: str | None) -> list[Trial]:
        """What a decision rests on, parsed light: the measured runs of these commits and of every
        commit run more than once (the pooled noise). Not the whole ledger on every decision."""
        wanted = [c for c in commits if c]
        marks = ", ".join("?" for _ in wanted) or "NULL"
        return self._select(
            f"metric IS NOT NULL AND (commit_sha IN ({marks}) OR commit_sha IN (SELECT commit_sha FROM "
            "trials WHERE metric IS NOT NULL GROUP BY commit_sha HAVING COUNT(*) >= 2))",
            tuple(wanted),
        )

    # -- named questions: the SQL of the run lives in this module alone -------------------------
    def in_state(self, state: TrialState, *, light: bool = True) -> list[Trial]:
        return self._select("state = ?", (str(state),), light=light)

    def live_count(self) -> int:
        """Trials with a job submitted, queued or running."""
        live = tuple(str(s) for s in TrialState if s.is_live())
        return int(self._value(f"SELECT COUNT(*) FROM trials WHERE state IN {live}"))

    def runs_of(self, commit: str | None, *, measured: bool = False) -> list[Trial]:
        """Every trial of a commit (re-runs included), or only those with a metric."""
        return self._select("commit_sha = ?" + (" AND metric IS NOT NULL" if measured else ""), (commit,))

    def of_kind(self, kind: TrialKind) -> list[Trial]:
        return self._select("kind = ?", (str(kind),), light=False)

    def count_kind(self, kind: TrialKind) -> int:
        return int(self._value("SELECT COUNT(*) FROM trials WHERE kind = ?", (str(kind),)))

    def decided_ideas(self) -> set[str]:
        """Ids of decided baselines, hypotheses and combinations: what a planner may have seen."""
        kinds = tuple(k.value for k in TrialKind if k.is_hypothesis())
        rows = self.conn.execute(f"SELECT id FROM trials WHERE decision IS NOT NULL AND kind IN {kinds}")
        return {r[0] for r in rows}

    def last_round(self) -> int:
        return int(self._value("SELECT COALESCE(MAX(round), 0) FROM trials"))

    def first(self) -> Trial | None:
        found = self._select("seq = 1")
        return found[0] if found else None

    def undecided_or_after(self, seq: int) -> list[Trial]:
        """What a one-screen view shows of a big ledger: every undecided trial and the latest ones."""
        return self._select("state != 'done' OR seq > ?", (seq,))

    def kept_or_after(self, seq: int) -> list[Trial]:
        """Trials whose diffs a report shows: every keep and the latest ones, parsed in full."""
        return self._select("seq > ? OR decision = 'keep'", (seq,), light=False)

    def from_source(self, source: str) -> list[Trial]:
        """Trials whose hypothesis came from `source` (e.g. the transfer check's re-runs)."""
        return self._select("source = ?", (source,))

    def with_job_state(self, *states: str) -> list[Trial]:
        marks = ", ".join("?" for _ in states)
        return self._select(f"job_state IN ({marks})", states)

    def _value(self, sql: str, params: tuple[Any, ...] = ()) -> Any:
        return self.conn.execute(sql, params).fetchone()[0]

    def repeated(self) -> list[Trial]:
        """Measured trials of commits run more than once: all the noise estimate needs."""
        return self._select(
            "metric IS NOT NULL AND commit_sha IN (SELECT commit_sha FROM trials WHERE metric IS NOT NULL "
            "GROUP BY commit_sha HAVING COUNT(*) >= 2)"
        )

    def params(self) -> dict[str, dict[str, Any]]:
        """The search-space values each trial's hypothesis recorded (`params`), by trial id, read in
        SQL (JSON1) rather than by parsing every hypothesis; trials without any are left out."""
        rows = self.conn.execute(
            "SELECT id, json_extract(hypothesis, '$.params') FROM trials "
            "WHERE json_type(hypothesis, '$.params') = 'object'"
        ).fetchall()
        return {tid: json.loads(raw) for tid, raw in rows}

    def trial(self, tid: str) -> Trial | None:
        row = self.conn.execute("SELECT * FROM trials WHERE id = ?", (tid.upper(),)).fetchone()
        return _trial(row) if row else None

    def events(self) -> list[dict[str, Any]]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM events ORDER BY id")]

    # -- results.tsv ------------------------------------------------------------------------
    def write_results(self, path: Path, metric_name: str) -> None:
        """autoresearch's results.tsv columns (commit, metric, memory_gb, status, description) plus
        ours, one row per decided trial in the order of decisions."""
        rows = self._select("decision IS NOT NULL")
        rows.sort(key=lambda t: (t.decided_at or 0.0, t.seq))
        lines = ["\t".join(_results_header(metric_name)), *(_result_row(t) for t in rows)]
        atomic_write_text(path, "\n".join(lines) + "\n")

    def append_result(self, path: Path, metric_name: str, trial: Trial) -> None:
        """One decided trial's row at the end of results.tsv: a decision costs the same at trial 10
        and 10,000 (the whole file is rewritten on resume and at the end, in the same order)."""
        if not path.exists():
            self.write_results(path, metric_name)
            return
        with path.open("a", encoding="utf-8") as fh:
            fh.write(_result_row(trial) + "\n")


def _results_header(metric_name: str) -> list[str]:
    return ["trial", "commit", "parent", metric_name, "memory_gb", "status", "elapsed_s", "description",
            "kind", "of", "steps", "seed"]  # fmt: skip


def _result_row(t: Trial) -> str:
    row = [
        t.id,
        (t.commit or "")[:7],
        (t.parent or "")[:7],
        "" if t.metric is None else f"{t.metric:.6f}",
        "" if t.memory_gb is None else f"{t.memory_gb:.1f}",
        str(t.decision),
        "" if t.elapsed is None else f"{t.elapsed:.1f}",
        " ".join(t.title.split()),
        str(t.kind),
        t.of or "",
        "" if t.steps is None else str(t.steps),
        str(t.seed),
    ]
    return "\t".join(row)


def _reader(path: Path) -> sqlite3.Connection:
    """A read-only connection. A writer killed mid-transaction leaves a hot journal that only a
    writable connection can roll back; no writer is active then, so open one once to do it."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    try:
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
    except sqlite3.OperationalError as exc:
        if "readonly" not in str(exc):
            raise
        conn.close()
        with sqlite3.connect(path, timeout=30) as writer:
            writer.execute("SELECT count(*) FROM sqlite_master").fetchone()
        writer.close()
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=30)
    return conn


def _to_db(value: Any) -> Any:
    if isinstance(value, (TrialState, Decision, TrialKind)):
        return str(value)
    if isinstance(value, dict):
        return json.dumps(value)
    if isinstance(value, str):
        return storable(value)  # model-written text may hold lone surrogates, which SQLite refuses
    return value


_STATES = {s.value: s for s in TrialState}  # enum calls cost more than the rest of a row
_DECISIONS = {d.value: d for d in Decision}
_KINDS = {k.value: k for k in TrialKind}


@functools.lru_cache(maxsize=4096)
def _hypothesis(raw: str) -> Hypothesis:
    """A hypothesis never changes once recorded: the controller, which reads trials again after
    every decision, parses each one once (frozen; treat its dicts as read-only)."""
    return Hypothesis.from_dict(json.loads(raw))


def _trial(row: sqlite3.Row | dict[str, Any], light: bool = False) -> Trial:
    f = dict(row)
    f["commit"] = f.pop("commit_sha")
    f["of"] = f.pop("of_trial")
    raw = f.pop("hypothesis")
    f["hypothesis"] = Hypothesis(f["title"], source=f["source"]) if light else _hypothesis(raw)
    f["state"] = _STATES[f["state"]]
    f["decision"] = _DECISIONS[f["decision"]] if f["decision"] else None
    f["kind"] = _KINDS[f["kind"]]
    f["metrics"] = json.loads(f["metrics"]) if f["metrics"] and not light else None
    f["evidence"] = json.loads(f["evidence"]) if f["evidence"] else None
    return Trial(**f)
