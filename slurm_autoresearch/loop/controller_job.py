"""The controller as a Slurm job: a small CPU-only job that resumes the run, and again if it dies.

Many sites forbid long-running processes on login nodes. The job script loops `ara resume` so a
controller killed inside the job comes back by itself, and asks for `--requeue` so a job lost
with its node is started again by Slurm; both resume from the ledger.
"""

from __future__ import annotations

import shlex
import subprocess
import sys

from ..errors import AraError
from ..rundir import RunDir
from ..spec import TaskSpec, time_minutes


def job_script(rundir: RunDir, spec: TaskSpec, python: str = sys.executable) -> str:
    c = spec.controller
    options = [
        f"--job-name=ara-ctl-{rundir.run_id}",
        f"--time={time_minutes(c.time)}",
        "--cpus-per-task=1",
        f"--mem={c.mem}",
        "--requeue",
        f"--output={rundir.path}/controller-job-%j.out",
        "--open-mode=append",
    ]
    options += [f"--{key}={value}" for key in ("partition", "account", "qos") if (value := getattr(c, key))]
    resume = f"{shlex.quote(python)} -m slurm_autoresearch.cli resume {shlex.quote(str(rundir.path))}"
    lines = [
        "#!/bin/bash",
        *(f"#SBATCH {o}" for o in options),
        "",
        *c.setup,
        "",
        "# A controller that dies is started again; `ara resume` exits 0 once the run has ended.",
        f"for attempt in $(seq 0 {c.restarts}); do",
        f"  {resume} && exit 0",
        '  echo "ara: controller exited with $?; resuming again in 5 s" >&2',
        "  sleep 5",
        "done",
        "exit 1",
        "",
    ]
    return "\n".join(lines)


def submit_controller(rundir: RunDir, spec: TaskSpec) -> str:
    """Submit the controller job; returns its job id."""
    script = rundir.path / "controller-job.sh"
    script.write_text(job_script(rundir, spec), encoding="utf-8")
    proc = subprocess.run(["sbatch", "--parsable", str(script)], capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        raise AraError(
            f"sbatch refused the controller job: {proc.stderr.strip().splitlines()[-1:]} "
            f'(script {script}); fix [controller] or run with [controller] where = "login"'
        )
    return proc.stdout.strip().split(";")[0]
