"""Executors run trial jobs: local processes now, Slurm job arrays through submitit next."""

from .base import Executor, JobSpec, JobUpdate
from .local import LocalExecutor
from .slurm import SlurmExecutor

__all__ = ["Executor", "JobSpec", "JobUpdate", "LocalExecutor", "SlurmExecutor"]
