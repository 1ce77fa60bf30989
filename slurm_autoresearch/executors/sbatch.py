"""What a task asks of sbatch: its options as submitit's parameters, and `sbatch --test-only`'s verdict."""

from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from ..spec import TaskSpec, time_minutes


def slurm_parameters(spec: TaskSpec, *, job_name: str, capacity: int) -> dict[str, Any]:
    """submitit SlurmExecutor parameters (sbatch options) for the task's trials."""
    s, res = spec.slurm, spec.resources
    minutes = time_minutes(s.time) if s.time is not None else math.ceil(spec.budget.trial_minutes) + 2
    # USR2 comes this long before the limit; it must stay inside even a one-minute job.
    delay = s.signal_delay_s if s.signal_delay_s is not None else (60 if minutes >= 5 else 15)
    params: dict[str, Any] = {
        "job_name": job_name,
        "time": minutes,
        "signal_delay_s": delay,
        "array_parallelism": capacity,
        "wckey": s.wckey,  # None drops submitit's default --wckey=submitit, which many clusters reject
        "use_srun": s.use_srun,
        "cpus_per_task": s.cpus_per_task or res.cpus_per_trial,
    }
    for key in ("partition", "account", "qos", "mem", "constraint", "exclude"):
        if getattr(s, key) is not None:
            params[key] = getattr(s, key)
    if s.gres is not None:
        params["gres"] = s.gres
    elif s.gpus_per_node is not None:
        params["gpus_per_node"] = s.gpus_per_node
    elif res.gpus_per_trial:
        params["gres"] = f"gpu:{res.gpus_per_trial}"
    if s.setup:
        params["setup"] = list(s.setup)
    additional = {k: v for k, v in s.additional.items() if v is not False}
    if additional:
        params["additional_parameters"] = additional
    return params


def sbatch_test_only(params: dict[str, Any]) -> str | None:
    """What `sbatch --test-only` says is wrong with these options, or None when it accepts them."""
    from submitit.slurm.slurm import _make_sbatch_string

    with tempfile.TemporaryDirectory(prefix="ara-sbatch-") as tmp:
        script = Path(tmp) / "check.sh"
        script.write_text(_make_sbatch_string(command="true", folder=tmp, **params))
        try:
            proc = subprocess.run(
                ["sbatch", "--test-only", str(script)], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"could not run sbatch: {exc}"
    if proc.returncode == 0:
        return None
    lines = [ln.strip() for ln in (proc.stderr + proc.stdout).splitlines() if ln.strip()]
    return lines[-1] if lines else f"exit code {proc.returncode}"
