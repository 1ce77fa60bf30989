"""Chaos test: run the example, SIGKILL the controller at random moments, resume, then audit.

    python scripts/chaos.py [--kills 20] [--seed 7] [--executor slurm|local] [--trials 24]

Each round starts the controller (`ara submit`, then `ara resume`), lets it run for a random
0.3-5 s and kills it with SIGKILL; after the last kill one more `ara resume` runs the run to its
end. Then it checks: every trial is in exactly one final state; no trial was submitted more
often than the ledger says and no job ran twice for one trial (sacct's job comments on Slurm,
runner.pid records locally); the best branch is the best kept trial's commit; and on Slurm the
ledger agrees with sacct on every job. Prints its figures; exits 1 on any failed check.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from slurm_autoresearch.executors.sacct import job_state, parse_sacct
from slurm_autoresearch.ledger import Ledger
from slurm_autoresearch.trial import Decision, TrialState

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "mil-stain"
ARA = [sys.executable, "-m", "slurm_autoresearch.cli"]


def example_repo(tmp: Path, args: argparse.Namespace) -> Path:
    repo = tmp / "repo"
    shutil.copytree(EXAMPLE, repo / "mil-stain", ignore=shutil.ignore_patterns(".ara", "predictions.json"))
    task = repo / "mil-stain" / "task.toml"
    text = task.read_text().replace("trials = 12 ", f"trials = {args.trials} ")
    text = text.replace("[run]\n", f'[run]\nexecutor = "{args.executor}"\nplanner = "offline"\n')
    text = text.replace("parallel = 2 ", f"parallel = {args.parallel} ")
    text += "\n[slurm]\npoll_seconds = 1.0\n"
    task.write_text(text)
    for git in (
        ["init", "-q"],
        ["add", "-A"],
        ["-c", "user.name=c", "-c", "user.email=c@c", "commit", "-qm", "x"],
    ):
        subprocess.run(["git", *git], cwd=repo, check=True)
    return task


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--executor", choices=["slurm", "local"], default="slurm")
    parser.add_argument("--trials", type=int, default=24)
    parser.add_argument("--parallel", type=int, default=4)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    tmp = Path(tempfile.mkdtemp(prefix="ara-chaos-"))
    task = example_repo(tmp, args)
    cwd = task.parent
    started = time.time()
    run_id, kills, resumes = "", 0, 0
    while kills < args.kills:
        cmd = [*ARA, "resume", run_id] if run_id else [*ARA, "submit", str(task)]
        log = (tmp / f"controller-{kills:02d}.log").open("w")
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        while not run_id:  # the run exists once its id is printed: the kills start from there
            line = proc.stdout.readline()  # type: ignore[union-attr]
            log.write(line)
            if not line:
                print("ara submit ended before printing a run id")
                return 1
            if line.startswith("run id: "):
                run_id = line.split()[-1]
        resumes += kills > 0
        time.sleep(rng.uniform(0.3, 5.0))
        if proc.poll() is not None:  # it ended by itself: the run is over before the kills are
            log.close()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        log.close()
        kills += 1
    final = subprocess.run([*ARA, "resume", run_id], cwd=cwd, capture_output=True, text=True)
    wall = time.time() - started
    rundir = cwd / ".ara" / "runs" / run_id
    ledger = Ledger.open(rundir / "ledger.sqlite", readonly=True)
    trials, meta = ledger.trials(), ledger.meta()
    ledger.close()
    checks: dict[str, bool] = {}
    print(
        f"run {run_id}: {kills} SIGKILLs, {resumes + 1} resumes, {wall:.0f} s, final resume exit "
        f"{final.returncode}, state {meta.get('state')} ({meta.get('end_reason')})"
    )
    checks["the run finished"] = final.returncode == 0 and meta.get("state") == "finished"
    checks[f"{kills} kills, each followed by a resume"] = kills == args.kills
    states = Counter((t.state.value, str(t.decision)) for t in trials)
    planned = sum(1 for t in trials if t.kind.counts_against_budget())  # combinations come on top
    print(
        f"trials {planned} of {args.trials} (+{len(trials) - planned} combinations and re-runs): "
        + ", ".join(f"{n} {s}/{d}" for (s, d), n in states.items())
    )
    checks["every trial in exactly one final state"] = (
        all(t.state is TrialState.DONE and t.decision is not None for t in trials) and planned == args.trials
    )
    for t in trials:
        if t.decision is not None and t.decision.is_failure():
            print(f"  {t.id} {t.decision.value}: {t.reason[:160]}")
    attempts = Counter(t.attempts for t in trials)
    print(f"submissions per trial (ledger): {dict(sorted(attempts.items()))}")
    if args.executor == "slurm":
        out = subprocess.run(
            [
                "sacct",
                "-X",
                "-n",
                "-P",
                "--name",
                f"ara-{run_id}",
                "-S",
                "now-1days",
                "-o",
                "JobID,State,NodeList,Start,End,Elapsed,AllocTRES,ExitCode,Timelimit,Reason,Comment",
            ],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        rows = parse_sacct(out)
        per_trial: Counter[str] = Counter()
        for job_id, row in rows.items():
            names = row.comment.removeprefix("ara:").split(",")
            index = int(job_id.split("_")[1]) if "_" in job_id else 0
            per_trial[names[index] if index < len(names) else "?"] += 1
        twice = {t: n for t, n in per_trial.items() if n > 1}
        print(
            f"sacct: {len(rows)} jobs for {len(per_trial)} trials; "
            f"trials with more than one job: {twice or 'none'}"
        )
        checks["no job submitted twice for a trial"] = (
            all(per_trial[t.id] == t.attempts for t in trials if t.job_id) and not twice
        )
        disagree = [
            t.id
            for t in trials
            if t.job_id and (t.job_id not in rows or job_state(rows[t.job_id].state) is None)
        ]
        jobs = sum(1 for t in trials if t.job_id)
        print(f"ledger vs sacct: {jobs - len(disagree)} jobs agree, disagreeing: {disagree or 'none'}")
        checks["the ledger agrees with sacct"] = not disagree
    else:
        runners = {t.id: (rundir / "trials" / t.id / "runner.pid").exists() for t in trials if t.job_id}
        checks["every submitted trial has one runner record"] = all(runners.values())
        # the runner notes each start in the trial's log; a submission queued in a controller that
        # died before starting it is submitted again, so attempts alone may say 2
        starts = {
            t.id: (rundir / "trials" / t.id / "train.log").read_text().count(f"[ara] trial {t.id} in")
            for t in trials
            if t.job_id
        }
        checks["no job submitted twice for a trial"] = set(starts.values()) <= {1}
    kept = sorted((t for t in trials if t.decision is Decision.KEEP), key=lambda t: t.decided_at or 0)
    best = subprocess.run(
        ["git", "rev-parse", f"ara/{run_id}/best"], cwd=cwd, capture_output=True, text=True
    ).stdout
    metrics = [t.metric for t in kept if t.metric is not None]
    print(
        f"best branch {best.strip()[:7]}, best kept trial {kept[-1].id} {kept[-1].commit[:7]} "  # type: ignore[index]
        f"{kept[-1].metric:.4f}"
    )
    checks["the best branch is the best kept trial"] = best.strip() == kept[-1].commit and kept[
        -1
    ].metric == max(metrics)
    for name, ok in checks.items():
        print(f"  {'ok  ' if ok else 'FAIL'} {name}")
    if all(checks.values()):
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print(f"left in {tmp}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
