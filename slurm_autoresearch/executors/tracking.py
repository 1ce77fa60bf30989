"""Weights & Biases for trials: offline by default, one group per run, one run per trial."""

from __future__ import annotations

import hashlib
import re
import struct
from pathlib import Path
from typing import Any, Literal

from .. import safetext

WandbMode = Literal["offline", "online", "off"]
OFFLINE_GLOB = "wandb/offline-run-*"
SUMMARY_DIR = "wandb-summary"
_NOTES_MAX = 200
_ID_MAX = 64  # W&B's server rejects very long run ids; ours stay well inside with a hash when cut


def wandb_run_id(run_id: str, trial_id: str) -> str:
    """The W&B run id of a trial (or of "summary"): derived from the ledger, so its files and its
    page can be found without reading them."""
    raw = re.sub(r"[^a-z0-9_-]+", "-", f"{run_id}-{trial_id}".lower()).strip("-")
    if len(raw) <= _ID_MAX:
        return raw
    digest = hashlib.sha1(raw.encode()).hexdigest()[:8]
    return f"{raw[: _ID_MAX - 9]}-{digest}"


def one_line(text: str, limit: int = _NOTES_MAX) -> str:
    """W&B notes: one plain line (a title is model-written), at most `limit` characters."""
    return safetext.one_line(text, limit)


def wandb_env(
    *,
    project: str,
    run_id: str,
    trial_id: str,
    trial_dir: Path,
    title: str = "",
    fidelity: str = "full",
    mode: WandbMode = "offline",
) -> dict[str, str]:
    """Variables that make a plain `wandb.init()` in the training code join the run's group, named
    after the trial, with the hypothesis as notes and the fidelity as job type.

    Offline, with its files in the trial directory on the shared filesystem (wandb would
    otherwise fall back to node-local /tmp when the default dir is not writable); `ara sync`
    uploads them later from a node with internet. "off" disables wandb, so user code still runs.
    """
    return {
        # An unknown mode (a hand-edited job.json) is offline: the runner must not fail here.
        "WANDB_MODE": {"online": "online", "off": "disabled"}.get(mode, "offline"),
        "WANDB_DIR": str(trial_dir),
        # Artifact staging (tables, media) defaults to ~/.local/share: keep it with the run files,
        # so a sync from another node finds it and home quotas are not hit.
        "WANDB_DATA_DIR": str(trial_dir / "wandb" / "data"),
        "WANDB_PROJECT": project,
        "WANDB_RUN_GROUP": run_id,
        "WANDB_RUN_ID": wandb_run_id(run_id, trial_id),
        "WANDB_NAME": trial_id,
        "WANDB_NOTES": one_line(title),
        "WANDB_JOB_TYPE": fidelity,
        "WANDB_TAGS": f"ara,{trial_id}",
        "WANDB_SILENT": "true",
        "WANDB_DISABLE_GIT": "true",
    }


def offline_runs(trial_dir: Path) -> list[Path]:
    """The trial's offline W&B runs, oldest first (a retried trial may have one per attempt)."""
    return sorted(p for p in trial_dir.glob(OFFLINE_GLOB) if p.is_dir())


def summary_dir(run_dir: Path) -> Path:
    """Where the run's W&B summary run keeps its files (its WANDB_DIR)."""
    return run_dir / SUMMARY_DIR


def read_records(path: Path) -> list[Any]:
    """The protobuf records of a `.wandb` transaction log.

    In wandb 0.31 an offline run writes no config.yaml, wandb-metadata.json or summary file: the
    log is the run, and what `wandb sync` uploads. Its format is stable across versions (old
    offline runs still sync): a 7-byte header (":W&B", magic 0xBEE1, version 0), then LevelDB log
    blocks of 32 KiB whose chunks carry a 7-byte header (crc32, length, type: full, first, middle,
    last). Reading the run record from it checks what W&B will show, not what our env asked for.
    """
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path} is not a W&B transaction log")
    records, pos, pending = [], 7, b""
    block = 32 * 1024
    while pos + 7 <= len(data):
        room = block - pos % block
        if room < 7:  # a block's tail too short for a header is padding
            pos += room
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if length == 0 and kind == 0:  # zero fill (a block not yet written)
            pos += room
            continue
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # full or last
            # Made at import time from the descriptor (wandb ships no stub for its _pb2 modules).
            record = wandb_internal_pb2.Record()  # type: ignore[attr-defined]
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def run_record(offline_dir: Path) -> Any:
    """The run record (id, name, group, job type, notes, project) of an offline run directory."""
    logs = list(offline_dir.glob("run-*.wandb"))
    if len(logs) != 1:
        raise ValueError(f"{offline_dir}: expected one run-*.wandb log, found {len(logs)}")
    runs = [r.run for r in read_records(logs[0]) if r.WhichOneof("record_type") == "run"]
    if not runs:
        raise ValueError(f"no run record in {logs[0]}")
    return runs[0]
