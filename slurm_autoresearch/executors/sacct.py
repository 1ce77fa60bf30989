"""Slurm's words, parsed: the one table of Slurm job states, and sacct/squeue/scontrol output.

Parsing is kept apart from running the commands (as submitit's read_info is), so every
parser is tested on text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from ..outcome import JobState

# The only place Slurm's state strings appear. None: the job is still alive (or will be again).
SLURM_STATES: dict[str, JobState | None] = {
    "PENDING": None,
    "CONFIGURING": None,
    "RUNNING": None,
    "COMPLETING": None,
    "SUSPENDED": None,
    "REQUEUED": None,
    "REQUEUE_FED": None,
    "REQUEUE_HOLD": None,
    "RESIZING": None,
    "SIGNALING": None,
    "STAGE_OUT": None,
    "STOPPED": None,
    "RESV_DEL_HOLD": None,
    "SPECIAL_EXIT": None,
    "COMPLETED": JobState.COMPLETED,
    "FAILED": JobState.FAILED,
    "CANCELLED": JobState.CANCELLED,
    "REVOKED": JobState.CANCELLED,
    "TIMEOUT": JobState.TIMEOUT,
    "DEADLINE": JobState.TIMEOUT,
    "OUT_OF_MEMORY": JobState.OOM,
    "NODE_FAIL": JobState.NODE_FAIL,
    "BOOT_FAIL": JobState.NODE_FAIL,
    "PREEMPTED": JobState.PREEMPTED,
}

SACCT_FIELDS = "JobID,State,NodeList,Start,End,Elapsed,AllocTRES,ExitCode,Timelimit,Reason,Comment"


def job_state(raw: str) -> JobState | None:
    """Our state for a Slurm state string (`CANCELLED by 123` included); None while alive.

    A state this table does not know counts as alive: the watcher's vanish and time checks
    end such a job rather than a guess.
    """
    word = raw.strip().split(" ", 1)[0].rstrip("+").upper()
    return SLURM_STATES.get(word)


@dataclass(frozen=True)
class SlurmRow:
    """One job (or array task) as the scheduler reports it."""

    job_id: str
    state: str
    node: str = ""
    start: str = ""
    end: str = ""
    elapsed_s: float | None = None
    gpus: int = 0
    exit_code: str = ""
    timelimit_s: float | None = None
    reason: str = ""  # why a pending job waits (Priority, Resources, QOSMaxJobsPerUserLimit...)
    comment: str = ""

    @property
    def ours(self) -> JobState | None:
        return job_state(self.state)

    @property
    def gpu_seconds(self) -> float | None:
        return None if self.elapsed_s is None else self.elapsed_s * self.gpus


def duration_s(text: str) -> float | None:
    """Slurm durations: `[D-]HH:MM:SS`, `MM:SS`, `MM`, `UNLIMITED`/`INVALID` (None)."""
    text = text.strip()
    if not text or text.upper() in ("UNLIMITED", "INVALID", "PARTITION_LIMIT", "NONE"):
        return None
    days, _, clock = text.rpartition("-")
    try:
        parts = [float(p) for p in clock.split(":")]
        day_s = int(days) * 86400 if days else 0
    except ValueError:
        return None
    if days:  # D-HH, D-HH:MM, D-HH:MM:SS
        parts += [0.0] * (3 - len(parts))
        return day_s + parts[0] * 3600 + parts[1] * 60 + parts[2]
    if len(parts) == 1:  # minutes, as in --time=30
        return parts[0] * 60
    if len(parts) == 2:  # MM:SS
        return parts[0] * 60 + parts[1]
    return parts[0] * 3600 + parts[1] * 60 + parts[2]


def gpus_from_tres(tres: str) -> int:
    """GPU count in AllocTRES (`...,gres/gpu=2,...` or `gres/gpu:a100=2`)."""
    total = 0
    for item in tres.split(","):
        key, _, value = item.partition("=")
        if key == "gres/gpu" and value.isdigit():
            return int(value)
        if key.startswith("gres/gpu:") and value.isdigit():
            total += int(value)
    return total


def _expand(job_id: str) -> list[str]:
    """`12_[3-5,8%4]` -> 12_3, 12_4, 12_5, 12_8 (pending array tasks are grouped)."""
    m = re.fullmatch(r"(\d+)_\[([^\]]+)\]", job_id)
    if not m:
        return [job_id]
    base, spec = m.group(1), m.group(2).split("%")[0]
    out = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out += [f"{base}_{i}" for i in range(int(lo), int(hi or lo) + 1)]
    return out


def parse_sacct(text: str) -> dict[str, SlurmRow]:
    """Rows of `sacct -X -n -P -o SACCT_FIELDS`; steps (`12.batch`) are skipped."""
    rows: dict[str, SlurmRow] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 9 or "." in fields[0]:
            continue
        job_id, state, node, start, end, elapsed, tres, exit_code, limit = fields[:9]
        reason = fields[9] if len(fields) > 9 and fields[9] != "None" else ""
        comment = "|".join(fields[10:])  # a comment may itself hold "|"
        for jid in _expand(job_id):
            rows[jid] = SlurmRow(
                jid,
                state,
                node if node != "None assigned" else "",
                start,
                end,
                duration_s(elapsed),
                gpus_from_tres(tres),
                exit_code,
                duration_s(limit),
                reason,
                comment,
            )
    return rows


def eligible_at(text: str) -> float | None:
    """`scontrol show job -o ID`: when the job may start (EligibleTime, in the client's local
    time, as the epoch), or None where Slurm gives no time."""
    found = re.search(r"\bEligibleTime=(\S+)", text)
    if not found:
        return None
    try:
        return datetime.fromisoformat(found.group(1)).timestamp()
    except ValueError:  # "Unknown", "None"
        return None


SQUEUE_FORMAT = "%i|%T|%N|%r|%k"


def parse_squeue(text: str) -> dict[str, SlurmRow]:
    """Rows of `squeue -h -r -o SQUEUE_FORMAT` (id, state, node, reason, comment)."""
    rows = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) >= 2 and fields[0]:
            fields += [""] * (5 - len(fields))
            reason = fields[3] if fields[3] != "None" else ""
            for jid in _expand(fields[0]):
                rows[jid] = SlurmRow(jid, fields[1], fields[2], reason=reason, comment="|".join(fields[4:]))
    return rows


def parse_scontrol(text: str) -> SlurmRow | None:
    """`scontrol show job -o ID`: the job's state while Slurm still remembers it (MinJobAge)."""
    fields = dict(re.findall(r"(\w+)=(\S*)", text))
    if "JobState" not in fields:
        return None
    job_id = fields.get("JobId", "")
    if fields.get("ArrayJobId") and fields.get("ArrayTaskId", "").isdigit():
        job_id = f"{fields['ArrayJobId']}_{fields['ArrayTaskId']}"
    node = fields.get("NodeList", "")
    return SlurmRow(
        job_id,
        fields["JobState"],
        "" if node == "(null)" else node,
        elapsed_s=duration_s(fields.get("RunTime", "")),
        timelimit_s=duration_s(fields.get("TimeLimit", "")),
    )
