"""Weights & Biases for trials: offline by default, one group per run, one run per trial."""

from __future__ import annotations

from pathlib import Path


def wandb_env(*, project: str, run_id: str, trial_id: str, trial_dir: Path) -> dict[str, str]:
    """Variables that make a plain `wandb.init()` in the training code land in the run's group.

    Offline, with its files in the trial directory on the shared filesystem (wandb would
    otherwise fall back to node-local /tmp when the default dir is not writable).
    """
    return {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(trial_dir),
        "WANDB_PROJECT": project,
        "WANDB_RUN_GROUP": run_id,
        "WANDB_NAME": f"{run_id}/{trial_id}",
        "WANDB_JOB_TYPE": "trial",
        "WANDB_TAGS": f"ara,{trial_id}",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
    }
