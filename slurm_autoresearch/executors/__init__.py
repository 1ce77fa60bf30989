"""Executors run trial jobs: local processes (.local), or Slurm job arrays through submitit (.slurm).

The package itself exports only the contract (.base). Every import of a submodule runs this file,
and the read side imports .sandbox and .tracking: were the executors imported here, `ara status`
would load the runner, submitit's glue and pydantic. Import LocalExecutor and SlurmExecutor from
their modules.
"""

from .base import Executor, JobSpec, JobUpdate

__all__ = ["Executor", "JobSpec", "JobUpdate"]
