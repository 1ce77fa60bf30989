"""Ledger on real SQLite: migrations, rollback journal, trial records, results.tsv; the run lock."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from slurm_autoresearch.errors import RunLockedError
from slurm_autoresearch.hypothesis import Edit, Hypothesis
from slurm_autoresearch.ledger import MIGRATIONS, Ledger
from slurm_autoresearch.outcome import JobState, Outcome
from slurm_autoresearch.rundir import RunDir
from slurm_autoresearch.trial import Decision, TrialState
from slurm_autoresearch.trials import Trials


def test_migrations_and_journal_mode(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    assert ledger.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert ledger.conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    ledger.close()
    again = Ledger.open(tmp_path / "ledger.sqlite")  # re-running migrations is a no-op
    assert again.trials() == []
    again.close()


def test_trials_round_trip_and_results_tsv(tmp_path: Path) -> None:
    ledger = Ledger.open(tmp_path / "ledger.sqlite")
    h = Hypothesis("set lr=0.01", "why", edits=(Edit("c.toml", "a", "b"),), params={"lr": 0.01})
    t1 = ledger.add_trial(Hypothesis.baseline(), parent="a" * 40, parent_trial=None, now=1.0)
    t2 = ledger.add_trial(h, parent="a" * 40, parent_trial="T0001", now=2.0)
    assert (t1.id, t2.id) == ("T0001", "T0002")
    steps = Trials(ledger, clock=lambda: 3.0)
    steps.materialized(t1, "a" * 40)
    steps.submitting(t1)
    steps.started(t1, "pid:0")
    done = Outcome(JobState.COMPLETED, metric=0.5, metrics={"score": 0.5}, elapsed=1.25, memory_gb=0.5)
    steps.measured(t1, done, "score")
    steps.decided(t1, Decision.KEEP, "first result", evidence=None, learning="", summary="")
    steps.materialized(t2, "b" * 40)
    steps.submitting(t2)
    steps.started(t2, "pid:1")
    back = ledger.trial("t0002")
    assert back is not None and back.hypothesis == h and back.state is TrialState.RUNNING
    assert ledger.trial("T0001").metrics == {"score": 0.5}  # type: ignore[union-attr]
    ledger.write_results(tmp_path / "results.tsv", "val_f1")
    rows = (tmp_path / "results.tsv").read_text().splitlines()
    assert rows[0].split("\t") == [
        "trial",
        "commit",
        "parent",
        "val_f1",
        "memory_gb",
        "status",
        "elapsed_s",
        "description",
        "kind",
        "of",
        "steps",
        "seed",
    ]
    assert rows[1].split("\t") == [
        "T0001",
        "aaaaaaa",
        "aaaaaaa",
        "0.500000",
        "0.5",
        "keep",
        "1.2",
        "baseline",
        "hypothesis",
        "",
        "",
        "0",
    ]
    assert len(rows) == 2  # undecided trials are not results yet
    kinds = [e["kind"] for e in ledger.events()]
    steps = ["materialized", "submitting", "started", "measured"]
    assert kinds == ["planned", "planned", *steps, "decided", *steps[:-1]]
    ledger.close()


def test_readonly_reader_cannot_write(tmp_path: Path) -> None:
    Ledger.open(tmp_path / "ledger.sqlite").close()
    reader = Ledger.open(tmp_path / "ledger.sqlite", readonly=True)
    with pytest.raises(sqlite3.OperationalError):
        reader.set_meta(x=1)
    reader.close()


def test_lock_names_its_holder_and_replaces_dead_ones(tmp_path: Path) -> None:
    rundir = RunDir.create(tmp_path / ".ara", "r1")
    assert (tmp_path / ".ara" / ".gitignore").read_text() == "*\n"
    rundir.acquire()
    with pytest.raises(RunLockedError, match=f"held by controller pid {os.getpid()}"):
        rundir.acquire()
    rundir.release()
    assert rundir.lock_holder() is None
    # A holder that died on this host is replaced rather than blocking the run forever.
    holder = {"host": os.uname().nodename, "pid": 2**22 + 12345, "since": 0}
    rundir.lock_path.write_text(json.dumps(holder))
    rundir.acquire()
    assert rundir.lock_holder()["pid"] == os.getpid()  # type: ignore[index]
    rundir.release()


def test_run_ids_do_not_collide(tmp_path: Path) -> None:
    a = RunDir.create(tmp_path, "same")
    b = RunDir.create(tmp_path, "same")
    assert a.path != b.path and b.run_id == "same-2"


def test_lock_staleness_by_pid_heartbeat_and_slurm_job(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import time

    rundir = RunDir.create(tmp_path / ".ara", "r2")
    elsewhere = {"host": "login7", "pid": 42, "since": 0}
    assert rundir.holder_alive({**elsewhere, "beat": time.time()}) is None  # cannot tell: refuse
    assert rundir.holder_alive({**elsewhere, "beat": time.time() - 3600}) is False  # heartbeat stopped
    me = {"host": socket.gethostname(), "pid": os.getpid()}
    assert rundir.holder_alive(me) is True
    assert rundir.holder_alive({**me, "start": "1"}) is False  # the pid was reused by another process
    monkeypatch.setenv("SLURM_JOB_ID", "991")
    assert rundir.holder_alive({**elsewhere, "beat": time.time(), "slurm_job": "991"}) is False  # requeued
    rundir.lock_path.write_text(json.dumps({**elsewhere, "beat": time.time()}))
    with pytest.raises(RunLockedError, match="held by controller pid 42 on login7"):
        rundir.acquire()
    rundir.lock_path.write_text(json.dumps({**elsewhere, "beat": time.time() - 3600}))
    rundir.acquire()  # taken over
    holder = rundir.lock_holder()
    assert holder is not None and holder["pid"] == os.getpid() and holder["slurm_job"] == "991"
    before = holder["beat"]
    time.sleep(0.01)
    rundir.heartbeat()
    assert rundir.lock_holder()["beat"] > before  # type: ignore[index]
    rundir.release()


def test_readers_survive_a_writer_killed_mid_transaction(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "ledger.sqlite"
    Ledger.open(path).close()
    code = (
        f"import sqlite3, os; c = sqlite3.connect({str(path)!r}); c.execute('begin'); "
        "c.execute(\"insert into meta values ('state', '\\\"half\\\"')\"); "
        "[c.execute('insert into events(at, kind) values(0, ?)', (str(i),)) for i in range(50000)]; "
        "os.kill(os.getpid(), 9)"
    )
    subprocess.run([sys.executable, "-c", code], check=False)
    assert (tmp_path / "ledger.sqlite-journal").exists()  # a hot journal: the writer died holding it
    reader = Ledger.open(path, readonly=True)  # `ara status` right after a SIGKILL
    assert reader.meta() == {} and reader.events() == []  # rolled back: nothing half-written
    reader.close()


def _racer(path: str, start: object, done: object, wins: object) -> None:
    from slurm_autoresearch.errors import RunLockedError as Locked

    start.wait()  # type: ignore[attr-defined]
    try:
        RunDir(Path(path)).acquire()
        wins.put(os.getpid())  # type: ignore[attr-defined]
    except Locked:
        pass
    done.wait()  # type: ignore[attr-defined]  # a winner that exited would be a dead holder: stale again


def test_exactly_one_of_many_racers_takes_a_stale_lock(tmp_path: Path) -> None:
    """Issue 14: two controllers could both take one stale lock (6 in 100 tries). Eight processes
    start at one barrier against a dead holder's lock, 200 times over: exactly one wins each time."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    rundir = RunDir.create(tmp_path / ".ara", "race")
    dead = {"host": os.uname().nodename, "pid": 2**22 + 777, "since": 0, "start": "1"}
    for round_ in range(200):
        rundir.lock_path.write_text(json.dumps(dead))
        start, done, wins = ctx.Barrier(8), ctx.Barrier(8), ctx.Queue()
        procs = [ctx.Process(target=_racer, args=(str(rundir.path), start, done, wins)) for _ in range(8)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        winners = []
        while not wins.empty():
            winners.append(wins.get())
        holder = rundir.lock_holder()
        assert len(winners) == 1, (round_, winners)
        assert holder is not None and holder["pid"] == winners[0], (round_, holder, winners)


def test_a_controller_whose_lock_was_taken_stops_without_touching_the_run(toy_repo: Path) -> None:
    import socket

    from slurm_autoresearch.errors import LockLostError
    from slurm_autoresearch.loop.launcher import launch
    from slurm_autoresearch.loop.preflight import load_task

    from .conftest import write_task

    controller = launch(load_task(write_task(toy_repo, trials=3)), echo=lambda _: None)
    other = {"host": socket.gethostname(), "pid": 1, "start": "x", "since": 0, "beat": 0}
    controller.rundir.lock_path.write_text(json.dumps(other))  # someone else took the run over
    assert controller.rundir.heartbeat() is False
    controller._last_beat = -1e9  # the first poll beats
    with pytest.raises(LockLostError):
        controller.run()
    ledger = Ledger.open(controller.rundir.ledger, readonly=True)
    state = ledger.meta()["state"]
    ledger.close()
    assert state != "failed" and json.loads(controller.rundir.lock_path.read_text()) == other
