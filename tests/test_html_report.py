"""report.html: a real run's page is self-contained, escapes model text, and a browser shows it."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from slurm_autoresearch.evidence import running_best
from slurm_autoresearch.hypothesis import Hypothesis
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.loop.launcher import launch
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.rundir import RunDir
from slurm_autoresearch.task import read_spec
from slurm_autoresearch.trial import Decision, Trial, TrialState
from slurm_autoresearch.views.chart import progress_svg
from slurm_autoresearch.views.html_report import render_html, write_html_report

from .conftest import commit_all, unavailable, write_task
from .ledgers import synthetic_run

HOSTILE = "<script>alert(1)</script> x to 1"

IDEAS = f"""
[[ideas]]
title = "x to 2"
config = {{ x = 2.0 }}
[[ideas]]
title = "{HOSTILE}"
config = {{ x = 1.0 }}
[[ideas]]
title = "crash"
config = {{ crash = true }}
[[ideas]]
title = "x to 0"
config = {{ x = 0.0 }}
"""


@pytest.fixture
def run_page(toy_repo: Path) -> tuple[RunDir, Path]:
    """A finished toy run (a keep, a crash, a hostile title) and its report.html."""
    (toy_repo / "config.toml").write_text("x = 0.5  # the x knob\ny = 2.0\ncrash = false\n")
    commit_all(toy_repo, "crash knob")
    controller = launch(load_task(write_task(toy_repo, IDEAS, trials=5, parallel=1)), echo=lambda _: None)
    controller.run()
    rundir = controller.rundir
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        path = write_html_report(rundir, read_spec(rundir.task_copy), ledger)
    finally:
        ledger.close()
    return rundir, path


def test_page_is_self_contained_and_complete(run_page: tuple[RunDir, Path]) -> None:
    rundir, path = run_page
    assert path == rundir.path / "report.html"
    page = path.read_text(encoding="utf-8")
    ledger = Ledger.open(rundir.ledger, readonly=True)
    trials = ledger.trials()
    ledger.close()
    assert len(trials) == 5
    by_title = {t.title: t for t in trials}
    assert by_title["crash"].decision is Decision.CRASH
    assert any(t.decision is Decision.KEEP for t in trials[1:])
    # Nothing is fetched at view time: no stylesheet links, no external scripts, no remote src/href.
    assert "<link" not in page
    assert not re.search(r"<script[^>]*\bsrc=", page)
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page
    # The hostile title is text, not markup.
    assert "<script>alert(1)</script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; x to 1" in page
    assert page.count("<script") == 1  # our visibility self-check, nothing else
    # One table row per trial, each with its diff and decision.
    rows = re.findall(r'<tr id="(T\d{4})" class="d-(\w+)"', page)
    assert [r[0] for r in rows] == [t.id for t in trials]
    assert [r[1] for r in rows] == [str(t.decision) for t in trials]
    assert page.count("<details>") == len(trials)
    assert "+x = 2.0" in page  # the kept idea's diff, embedded
    # The chart: one marker per measured trial, a cross for the crash, the running best.
    measured = [t for t in trials if t.metric is not None and not t.decision.is_failure()]  # type: ignore[union-attr]
    assert len(re.findall(r'<circle class="pt ', page)) == len(measured)
    assert len(re.findall(r'<path class="fail ', page)) == 1
    assert 'class="best"' in page
    assert "score (higher is better) per trial" in page
    # The header: state, budget and decision rule.
    assert "finished" in page and "Budget spent" in page and "min_delta" in page


def test_page_renders_without_the_task_spec(run_page: tuple[RunDir, Path]) -> None:
    rundir, _ = run_page
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        page = render_html(rundir, None, ledger)
    finally:
        ledger.close()
    assert '<table id="trials">' in page and '<svg id="progress"' in page and "min_delta" in page


@pytest.fixture
def chromium() -> str:
    """Debian's chromium; asked for before the run is built, so a skip costs nothing."""
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    unavailable("no chromium on PATH: install it (apt-get install -y chromium)")


def _browse(binary: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    # A private profile and HOME: a browser must not touch (or be slowed by) the user's.
    cmd = [
        binary,
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        f"--user-data-dir={tmp / 'profile'}",
        *args,
    ]
    return subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp)}, check=False
    )


def test_chromium_shows_the_chart_and_the_table(
    chromium: str, run_page: tuple[RunDir, Path], tmp_path: Path
) -> None:
    _, path = run_page
    url = path.resolve().as_uri()
    dom = _browse(chromium, tmp_path, "--dump-dom", url)
    assert dom.returncode == 0, dom.stderr[-2000:]
    assert 'data-visible="chart table"' in dom.stdout, dom.stdout[:2000]
    assert len(re.findall(r'<tr id="T\d{4}"', dom.stdout)) == 5
    assert "alert(1)" in dom.stdout and "<script>alert" not in dom.stdout
    shot = tmp_path / "report.png"
    done = _browse(chromium, tmp_path, f"--screenshot={shot}", "--window-size=1280,1600", url)
    assert done.returncode == 0, done.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert shot.stat().st_size > 20_000  # a blank page of that size compresses to a few KB


def _trial(seq: int, metric: float | None, decision: Decision, fidelity: str = "full") -> Trial:
    return Trial(
        id=f"T{seq:04d}",
        seq=seq,
        title=f"idea {seq}",
        source="search",
        hypothesis=Hypothesis(f"idea {seq}"),
        state=TrialState.DONE,
        metric=metric,
        decision=decision,
        fidelity=fidelity,
    )


def test_running_best_follows_the_goal() -> None:
    trials = [
        _trial(1, 1.0, Decision.KEEP),
        _trial(2, 0.5, Decision.DISCARD),
        _trial(3, 0.8, Decision.KEEP),  # a keep (say, simpler) that is not better: no step
        _trial(4, 0.7, Decision.KEEP),
    ]
    assert running_best(trials, "min") == [(1, 1.0), (3, 0.8), (4, 0.7)]
    assert running_best(trials, "max") == [(1, 1.0)]


def test_screen_runs_are_hollow_and_failures_sit_on_the_rail() -> None:
    trials = [
        _trial(1, 0.5, Decision.KEEP),
        _trial(2, 0.4, Decision.DISCARD, "screen"),
        _trial(3, 0.6, Decision.PROMOTED, "screen"),
        _trial(4, 0.7, Decision.KEEP),
        _trial(5, None, Decision.CRASH),
        _trial(6, None, Decision.REJECTED),
        _trial(7, float("nan"), Decision.DISCARD),  # never a point at NaN
    ]
    svg = progress_svg(trials, "acc", "max", screen_steps=50)
    assert len(re.findall(r'<circle class="pt ', svg)) == 4
    assert len(re.findall(r'<circle class="pt \w+ screen"', svg)) == 2
    assert len(re.findall(r'<path class="fail ', svg)) == 2
    assert "screen (50 steps)" in svg


def test_an_empty_run_still_has_a_chart_and_a_table(tmp_path: Path) -> None:
    rundir = RunDir.create(tmp_path / ".ara", "empty")
    ledger = Ledger.open(rundir.ledger)
    try:
        ledger.set_meta(metric="acc", goal="max", state="created", created_at=0.0)
        page = render_html(rundir, None, ledger, now=60.0)
    finally:
        ledger.close()
    assert '<svg id="progress"' in page and '<table id="trials">' in page
    assert '<circle class="pt ' not in page


def test_page_counts_budgeted_trials_apart_and_marks_keeps_off_the_best_branch(tmp_path: Path) -> None:
    rundir = synthetic_run(tmp_path)
    ledger = Ledger.open(rundir.ledger, readonly=True)
    try:
        page = render_html(rundir, None, ledger, now=2_000_000.0)  # long after the run ended
    finally:
        ledger.close()
    assert "trials: 5 of 5 budgeted, + 1 repeat, 1 rerun, 1 combination" in page
    assert "<td>wall-clock hours</td><td>0.17</td>" in page  # its own 10 minutes, not the time since
    assert "`ara rerun` ran 0.03 h more after the run ended" in page
    lineage = re.search(r'<ol class="lineage">(.*?)</ol>', page)
    off = re.search(r'<ul class="off">(.*?)</ul>', page)
    assert lineage and re.findall(r"<li>(T\d{4})", lineage.group(1)) == ["T0001", "T0004"]
    assert off and re.findall(r"<li>(T\d{4}) .*?, not on the best branch</li>", off.group(1)) == ["T0003"]
