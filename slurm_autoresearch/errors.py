"""Errors the CLI turns into one-line messages; failed jobs are never errors, they are outcomes."""


class AraError(Exception):
    """Misconfiguration or broken infrastructure: the message says what to do next."""

    exit_code = 1


class TaskError(AraError):
    """task.toml is invalid; nothing was created."""

    exit_code = 2


class UsageError(AraError):
    """The command line names something that does not exist (a run, a trial)."""

    exit_code = 2


class RunLockedError(AraError):
    """Another controller holds the run directory."""


class LockLostError(AraError):
    """This controller's lock now names another controller: it must stop touching the run."""


class BaselineError(AraError):
    """The unchanged code did not produce a metric, so there is nothing to improve on."""


class EditError(AraError):
    """A hypothesis could not be materialized; the trial is recorded as rejected."""
