"""What a run writes for people as it goes: controller.log, each trial's report, results.tsv, report.html."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable

from ..ledger import Ledger
from ..llm import Call
from ..outcome import Outcome
from ..rundir import RunDir
from ..spec import TaskSpec
from ..trial import Trial
from ..views import report
from ..views.html_report import write_html_report

HTML_EVERY_S = (10.0, 30.0)  # report.html is rewritten at most this often (slow ones: the longer)


class RunLog:
    """controller.log, each line stamped, and echoed to whoever started the run."""

    def __init__(self, rundir: RunDir, clock: Callable[[], float], echo: Callable[[str], None]) -> None:
        self.rundir = rundir
        self.clock = clock
        self.echo = echo

    def __call__(self, message: str) -> None:
        stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.clock()))
        with self.rundir.controller_log.open("a", encoding="utf-8") as fh:
            fh.write(f"{stamp} {message}\n")
        self.echo(message)

    def calls(self, calls: list[Call]) -> None:
        """Model calls, one line each with tokens and cost; not echoed."""
        with self.rundir.controller_log.open("a", encoding="utf-8") as fh:
            fh.writelines(c.log_line() + "\n" for c in calls)


class Records:
    """A decided trial's report and results row, and report.html when it is due."""

    def __init__(self, rundir: RunDir, spec: TaskSpec, ledger: Ledger) -> None:
        self.rundir = rundir
        self.spec = spec
        self.ledger = ledger
        self._html_at, self._html_cost = float("-inf"), 0.0

    def trial(self, trial: Trial, outcome: Outcome | None) -> None:
        report.write_trial_report(self.rundir, self.spec, trial, outcome)
        self.ledger.append_result(self.rundir.results, self.spec.metric.name, trial)
        # report.html after a decision, at most every 10 s (it re-reads every trial: rewritten after
        # each decision it was a third of the controller's CPU at 200 trials), and every 30 s once
        # a rewrite costs more than 5% of that (0.7 s at 10,000 trials).
        wait = min(HTML_EVERY_S[1], max(HTML_EVERY_S[0], 20 * self._html_cost))
        if time.monotonic() - self._html_at >= wait:
            start = time.monotonic()
            write_html_report(self.rundir, self.spec, self.ledger)
            self._html_at, self._html_cost = time.monotonic(), time.monotonic() - start

    def run(self) -> None:
        """At the run's end: results.tsv in full, report.md (its plot drawn apart) and report.html."""
        self.ledger.write_results(self.rundir.results, self.spec.metric.name)
        report.write_run_report(self.rundir, self.spec, self.ledger, plot=False)
        write_html_report(self.rundir, self.spec, self.ledger)

    def apart(self, echo: Callable[[str], None]) -> None:
        """Once the ledger is closed, in processes of their own: progress.png (matplotlib costs the
        controller seconds and memory) and the W&B summary run (wandb never loads in here). Every run
        gets one, whether or not its trials call wandb.init(): trials, metrics and decisions are
        ara's own to report."""
        failed = report.plot_apart(self.rundir.path)
        if failed:
            echo(f"progress.png not drawn: {failed} (`ara report` draws it)")
        if self.spec.tracking.wandb == "off":
            return
        from ..views.wandb_summary import spawn_summary

        try:
            proc = spawn_summary(self.rundir.path)
            if os.environ.get("SLURM_JOB_ID"):  # Slurm ends a job's processes with the job
                proc.wait(timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            echo(f"W&B summary run not written: {exc}")
