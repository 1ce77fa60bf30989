"""The probe: what a training command really does, from a few short runs in a scratch copy."""

from .checkup import doctor, read_task, task_problem
from .command import EVAL_SCRIPT, candidates, evaluation_script, script_of
from .config import config_files, default_steps, propose_search, search_space
from .findings import Findings, conclude
from .folder import is_data, read_head, walk_files
from .output import guess_goal, metric_choices, printed_metrics, rank
from .run import Setup, run_probe
from .verdict import NO_SEED, ms, trial_seconds, verdicts, write_findings

__all__ = [
    "EVAL_SCRIPT",
    "NO_SEED",
    "Findings",
    "Setup",
    "candidates",
    "conclude",
    "config_files",
    "default_steps",
    "doctor",
    "evaluation_script",
    "guess_goal",
    "is_data",
    "metric_choices",
    "ms",
    "printed_metrics",
    "propose_search",
    "rank",
    "read_head",
    "read_task",
    "run_probe",
    "script_of",
    "search_space",
    "task_problem",
    "trial_seconds",
    "verdicts",
    "walk_files",
    "write_findings",
]
