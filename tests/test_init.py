"""`ara init --probe`, `ara doctor` and `[metric] pattern`: real scripts in real subprocesses."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from slurm_autoresearch import probe
from slurm_autoresearch.errors import TaskError
from slurm_autoresearch.loop.preflight import load_task
from slurm_autoresearch.metrics import pattern_metric, read_metrics

from .conftest import commit_all, git, invoke

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "mil-stain"

# A logistic fit in its own style: `val_acc=0.83` at the end, `step N loss=X` on the way; it reads
# ARA_STEPS and ARA_SEED, a data file and a config, and notes that it ran in RAN (outside its folder).
KEY_VALUE = '''\
"""Logistic regression on data/points.csv; prints val_acc=... in its own style."""
import csv
import math
import os
import random
import tomllib

try:  # outside its folder: in a sandbox (a room of its own /tmp) this fails, and that is fine
    open({ran!r}, "a").write("ran\\n")
except OSError:
    pass
cfg = tomllib.load(open("config.toml", "rb"))
steps = int(os.environ.get("ARA_STEPS", cfg["steps"]))
rng = random.Random(int(os.environ.get("ARA_SEED", "0")))
rows = [(float(a), float(b), int(c)) for a, b, c in csv.reader(open("data/points.csv"))]
w = [rng.gauss(0, 0.5) for _ in range(3)]
for step in range(1, steps + 1):
    x1, x2, y = rows[rng.randrange(len(rows))]
    p = 1 / (1 + math.exp(-(w[0] * x1 + w[1] * x2 + w[2])))
    w = [w[0] - cfg["lr"] * (p - y) * x1, w[1] - cfg["lr"] * (p - y) * x2, w[2] - cfg["lr"] * (p - y)]
    if step % 5 == 0:
        print(f"step {{step}} loss={{-math.log(max(p if y else 1 - p, 1e-9)):.4f}}", flush=True)
acc = sum((w[0] * a + w[1] * b + w[2] > 0) == bool(c) for a, b, c in rows) / len(rows)
print(f"epoch {{steps}} done: val_acc={{acc:.4f}}")
'''
KV_CONFIG = "steps = 200  # the author's budget\nlr = 0.1\nhidden = 16\n"

# A metrics file: --steps and --seed flags (no ARA_* variable), a module beside it, JSON out.
JSON_MAIN = '''\
"""Fits y = 3x by gradient steps; writes its metrics as JSON to ARA_METRICS_PATH."""
import argparse
import json
import os
import random

from helpers import target

parser = argparse.ArgumentParser()
parser.add_argument("--steps", type=int, default=500)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
rng = random.Random(args.seed)
w = rng.uniform(-1, 1)
for step in range(args.steps):
    x = rng.uniform(-1, 1)
    w -= 0.05 * 2 * (w * x - target(x)) * x
loss = sum((w * x / 10 - target(x / 10)) ** 2 for x in range(-10, 11)) / 21
json.dump({"val_loss": loss, "w": w}, open(os.environ["ARA_METRICS_PATH"], "w"))
print("done", flush=True)
'''
HELPERS = "def target(x):\n    return 3 * x\n"

# ARA_SEED ignored: the same result whatever the seed.
NO_SEED = '''\
"""Counts down ARA_STEPS; the seed is never read, so every seed gives the same score."""
import os
import random

rng = random.Random(1234)
steps = int(os.environ["ARA_STEPS"])
score = sum(rng.random() for _ in range(steps)) / steps
print("---")
print(f"score: {score:.6f}")
'''


def make_key_value(where: Path) -> Path:
    where.mkdir(parents=True)
    (where / "data").mkdir()
    (where / "train.py").write_text(KEY_VALUE.format(ran=str(where.parent / "ran.txt")))
    (where / "config.toml").write_text(KV_CONFIG)
    rng = __import__("random").Random(7)
    rows = [(rng.gauss(0, 1), rng.gauss(0, 1)) for _ in range(200)]
    (where / "data" / "points.csv").write_text(
        "".join(f"{a:.4f},{b:.4f},{int(a + b > 0)}\n" for a, b in rows)
    )
    (where / "README.md").write_text("A logistic fit.\n\n    python train.py\n")
    return where


def make_json(where: Path) -> Path:
    where.mkdir(parents=True)
    (where / "main.py").write_text(JSON_MAIN)
    (where / "helpers.py").write_text(HELPERS)
    return where


def make_no_seed(where: Path) -> Path:
    where.mkdir(parents=True)
    (where / "train.py").write_text(NO_SEED)
    return where


_init = invoke


def _commit(folder: Path) -> None:
    git(folder, "init", "-q", "-b", "main")
    commit_all(folder, "code and task")


def _toml(folder: Path) -> dict:
    return tomllib.loads((folder / "task.toml").read_text())


# -- pure readers ---------------------------------------------------------------------------------


def test_printed_metrics_and_patterns_read_the_codes_own_style() -> None:
    text = "step 10 loss 0.9\nepoch 3: train loss 0.5, test loss 2.19\nval_acc=0.83 lr: 0.1\n[ara] x=9\n"
    found = probe.printed_metrics(text)
    assert found["test_loss"]["value"] == 2.19 and found["train_loss"]["value"] == 0.5
    assert found["val_acc"]["value"] == 0.83 and "x" not in found
    for name in ("test_loss", "val_acc", "train_loss"):
        assert pattern_metric(text, found[name]["pattern"]) == found[name]["value"], name
    assert probe.metric_choices({}, found)[0][0] == "val_acc"
    assert probe.guess_goal("val_acc") == ("max", True) and probe.guess_goal("test_loss") == ("min", True)
    assert probe.guess_goal("widgets") == ("min", False)
    # The runner's reading: the pattern's last match, a named group, ara's own lines skipped.
    assert read_metrics(Path("/nonexistent"), text, "acc", r"val_acc=(?P<value>[\d.]+)") == {"acc": 0.83}
    assert pattern_metric("[ara] val_acc=0.9\nval_acc=0.5\nval_acc=0.7\n", r"val_acc=([\d.]+)") == 0.7


def test_the_command_is_the_wrapper_that_reads_ara_steps(tmp_path: Path) -> None:
    """The issue's makemore: the script ignores ARA_STEPS and prints no metric; the wrapper beside
    it reads ARA_STEPS and runs it. A script with a step flag gets the flag."""
    (tmp_path / "makemore.py").write_text("import argparse\nprint('training')\n")
    (tmp_path / "run_makemore.py").write_text(
        "import os, subprocess\nsteps = os.environ['ARA_STEPS']\nsubprocess.run(['python', 'makemore.py'])\n"
    )
    (tmp_path / "evaluate.py").write_text("print('---')\n")
    found = probe.candidates(tmp_path)
    assert found[0].command == "python run_makemore.py" and "reads ARA_STEPS" in found[0].why
    assert "wraps makemore.py" in found[0].why and [c.script for c in found] == [
        "run_makemore.py",
        "makemore.py",
    ]
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "fit.py").write_text(
        "import argparse\np = argparse.ArgumentParser()\n"
        "p.add_argument('--max-steps', type=int, default=5000)\np.add_argument('--seed', type=int)\n"
    )
    (flags / "README.md").write_text("```\npython fit.py --data names.txt --max-steps 100 && echo ok\n```\n")
    assert (
        probe.candidates(flags)[0].command
        == 'python fit.py --data names.txt --max-steps "$ARA_STEPS" --seed "$ARA_SEED"'
    )
    assert probe.default_steps(flags, "fit.py") == (5000, "the default of fit.py's --max-steps")


def test_config_numbers_become_a_search_space() -> None:
    space, left = probe.search_space(
        'steps = 100\nseed = 0\nlr = 0.01\nhidden = 128\ndropout = 0.1\nuse_bn = true\nact = "relu"\n'
        "[optim]\nweight_decay = 0.0001\n"
    )
    assert space == {
        "lr": "{ low = 0.001, high = 0.1, log = true }",
        "hidden": "{ choices = [64, 128, 256] }",
        "dropout": "{ low = 0.0, high = 0.3 }",
        "use_bn": "{ choices = [false, true] }",
        "optim.weight_decay": "{ low = 1e-05, high = 0.001, log = true }",
    }
    assert set(left) == {"steps", "seed", "act"}


def test_a_metric_pattern_is_checked_when_the_task_loads(toy_repo: Path) -> None:
    path = toy_repo / "task.toml"
    text = path.read_text().replace('goal = "max"\n', "goal = \"max\"\npattern = 'score=[0-9.]+'\n", 1)
    path.write_text(text)
    with pytest.raises(TaskError, match=r"task.toml: \[metric\] pattern: 'score=\[0-9.\]\+' has 0 groups"):
        load_task(path)
    path.write_text(text.replace("'score=[0-9.]+'", "'score=([0-9.]+'"))
    with pytest.raises(TaskError, match=r"\[metric\] pattern: .* is not a regular expression"):
        load_task(path)


# -- ara init --------------------------------------------------------------------------------------


def test_init_without_consent_runs_nothing(tmp_path: Path) -> None:
    """Not a terminal and no --probe: the files are read, nothing is run."""
    folder = make_key_value(tmp_path / "kv")
    code, output = _init(["init", str(folder)], tmp_path)
    assert code == 0, output
    assert not (tmp_path / "ran.txt").exists() and not (folder / ".ara").exists() and "probing" not in output
    data = _toml(folder)
    assert data["task"]["command"] == "python train.py"
    assert data["surface"]["freeze"] == ["data/points.csv"]  # the data file, by its name
    assert data["search"]["config"] == "config.toml" and set(data["search"]["space"]) == {"lr", "hidden"}
    assert "nothing was run" in (folder / "task.toml").read_text()
    assert "`ara submit" in output and "(runs `python train.py`)" in output


def test_init_probe_key_value_script_runs_end_to_end(tmp_path: Path) -> None:
    folder = make_key_value(tmp_path / "kv")
    code, output = _init(["init", "--probe", str(folder)], tmp_path)
    assert code == 0, output
    assert (tmp_path / "ran.txt").read_text().count("ran") >= 1  # the unsandboxed run at least
    data = _toml(folder)
    assert data["task"]["command"] == "python train.py" and "eval" not in data["task"]
    assert data["metric"]["name"] == "val_acc" and data["metric"]["goal"] == "max"
    assert data["metric"]["pattern"] == r"\bval_acc\s*=\s*([-+]?[0-9.]+(?:[eE][-+]?[0-9]+)?)"
    assert data["budget"]["steps"] == 200  # config.toml's steps
    assert data["surface"]["allow"] == ["train.py", "config.toml"]
    assert data["surface"]["freeze"] == ["data/points.csv"]
    assert data["search"]["config"] == "config.toml" and set(data["search"]["space"]) == {"lr", "hidden"}
    assert data["noise"]["repeats"] >= 2
    found = json.loads((folder / ".ara" / "probe.json").read_text())
    assert found["seed_changes_result"] is True and found["repeats_identical"] is True
    assert found["stops_at_steps"] is True and found["reads_ara_steps"] is True
    assert "config.toml" in found["reads"] and "data/points.csv" in found["reads"]
    assert "ok    metric val_acc = " in output and "stops at ARA_STEPS" in output
    assert (folder / ".ara" / ".gitignore").read_text() == "*\n"

    _commit(folder)
    task = load_task(folder / "task.toml")
    assert task.spec.metric.pattern == data["metric"]["pattern"]
    ara = str(Path(sys.executable).parent / "ara")
    sets = ["run.executor=local", "budget.trials=1", "noise.repeats=1", "run.planner=offline"]
    sets += ["run.summarizer=rules", "run.poll_seconds=0.1"]
    done = subprocess.run(
        [ara, "submit", "task.toml", *[a for s in sets for a in ("--set", s)]],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    status = json.loads(
        subprocess.run(
            [ara, "status", "--json"], cwd=folder, capture_output=True, text=True, check=True
        ).stdout
    )
    baseline = status["trials"][0]
    log = (Path(status["run"]["dir"]) / "trials" / baseline["id"] / "train.log").read_text()
    assert "epoch 200 done" in log  # the full budget
    assert baseline["decision"] == "keep" and baseline["metric"] == float(
        re.findall(r"val_acc=([\d.]+)", log)[-1]
    )


def test_check_refuses_a_metric_the_probe_never_saw(tmp_path: Path) -> None:
    folder = make_key_value(tmp_path / "kv")
    code, output = _init(["init", "--probe", str(folder)], tmp_path)
    assert code == 0, output
    _commit(folder)
    code, output = _init(["submit", "task.toml", "--check", "--set", "run.executor=local"], folder)
    assert code == 0, output
    code, output = _init(
        ["submit", "task.toml", "--check", "--set", "metric.pattern='nothing=([0-9]+)'"], folder
    )
    assert code == 2 and "[metric] pattern 'nothing=([0-9]+)' matches nothing in what the probe" in output
    # The name it prints, without the pattern that reads it: the error gives the pattern.
    text = (folder / "task.toml").read_text()
    (folder / "task.toml").write_text(re.sub(r"(?m)^pattern = .*\n", "", text))
    commit_all(folder, "no pattern")
    code, output = _init(["submit", "task.toml", "--check"], folder)
    assert (
        code == 2
        and "is printed as `epoch 10 done: val_acc=" in output
        and "add [metric] pattern = " in output
    )
    code, output = _init(["submit", "task.toml", "--check", "--set", "metric.name=val_loss"], folder)
    assert code == 2
    assert "[metric] name 'val_loss' was never seen by the probe of 'python train.py'" in output
    assert "val_acc" in output
    # Another command than the one probed: nothing to compare with.
    sets = ["--set", 'task.command="python  train.py"', "--set", "run.executor=local"]
    code, output = _init(["submit", "task.toml", "--check", *sets], folder)
    assert code == 0, output


def test_init_probe_json_metrics_file_script(tmp_path: Path) -> None:
    folder = make_json(tmp_path / "js")
    code, output = _init(["init", "--probe", str(folder)], tmp_path)
    assert code == 0, output
    data = _toml(folder)
    assert data["task"]["command"] == 'python main.py --steps "$ARA_STEPS" --seed "$ARA_SEED"'
    assert data["metric"] == {
        "name": "val_loss",
        "goal": "min",
        "min_delta": 0.0,
    }  # no pattern: read as it is
    assert data["surface"]["allow"] == ["main.py", "helpers.py"] and data["surface"]["freeze"] == []
    assert data["budget"]["steps"] == 500  # the default of --steps
    found = json.loads((folder / ".ara" / "probe.json").read_text())
    assert found["source"] == "the command's metrics file" and found["seed_changes_result"] is True
    # Read in the first run's room too: the metrics file has a folder of its own the room can write.
    assert found["runs"][0]["sandbox"] == found["sandbox"] and "val_loss" in found["runs"][0]["metrics"]
    assert found["stops_at_steps"] is True  # no step lines: its result changes with ARA_STEPS
    _commit(folder)
    assert load_task(folder / "task.toml").spec.metric.name == "val_loss"


def test_init_probe_flags_a_script_that_ignores_the_seed(tmp_path: Path) -> None:
    folder = make_no_seed(tmp_path / "ns")
    code, output = _init(["init", "--probe", str(folder)], tmp_path)
    assert code == 0, output
    assert "WARN  ARA_SEED changes nothing: noise cannot be measured, keeps are single-run" in output
    text = (folder / "task.toml").read_text()
    assert "# WARNING: ARA_SEED changes nothing: noise cannot be measured, keeps are single-run" in text
    data = _toml(folder)
    assert data["noise"]["repeats"] == 1 and data["metric"]["name"] == "score"
    found = json.loads((folder / ".ara" / "probe.json").read_text())
    assert found["seed_changes_result"] is False and found["repeats_identical"] is True
    _commit(folder)
    assert load_task(folder / "task.toml").spec.noise.repeats == 1


def test_doctor_checks_an_existing_task(tmp_path: Path) -> None:
    folder = make_no_seed(tmp_path / "ns")
    (folder / "task.toml").write_text(
        '[task]\nname = "ns"\ncommand = "python train.py"\n[metric]\nname = "accuracy"\ngoal = "max"\n'
        '[budget]\nsteps = 100\n[surface]\nallow = ["train.py"]\n'
    )
    code, output = _init(["doctor", "task.toml", "--steps", "5"], folder)
    assert code == 1, output
    assert "FAIL  [metric] name 'accuracy' was never seen" in output and "ARA_SEED changes nothing" in output
    assert json.loads((folder / ".ara" / "probe.json").read_text())["command"] == "python train.py"


def test_a_command_that_ignores_ara_steps_is_flagged(tmp_path: Path) -> None:
    folder = tmp_path / "fixed"
    folder.mkdir()
    (folder / "train.py").write_text(
        "import os, random\nrng = random.Random(int(os.environ['ARA_SEED']))\n"
        "for step in range(1, 101):\n    loss = rng.random()\n    print(f'step {step} loss {loss:.3f}')\n"
        "print('---')\nprint(f'val_loss: {loss:.4f}')\n"
    )
    code, output = _init(["init", "--probe", str(folder)], tmp_path)
    assert code == 0, output
    assert "WARN  does not stop at ARA_STEPS (last step line 100 at ARA_STEPS=10, 100 at " in output
    found = json.loads((folder / ".ara" / "probe.json").read_text())
    assert found["stops_at_steps"] is False and found["seed_changes_result"] is True
    assert len(found["runs"]) == 4  # one longer run showed nothing moves: no more


def test_a_command_that_only_runs_outside_the_sandbox_is_a_failure(tmp_path: Path, bwrap_works: None) -> None:
    """It writes beside its folder: in a trial's room that fails, so the probe says so, and still
    reads the metric from the run without a sandbox."""
    folder = tmp_path / "leaky"
    folder.mkdir()
    (folder / "train.py").write_text(
        f"import os\nopen({str(tmp_path / 'cache.txt')!r}, 'w').write('x')\n"
        "print('---')\nprint(f\"score: {int(os.environ['ARA_SEED']) + 0.5}\")\n"
    )
    code, output = _init(["init", "--probe", str(folder)], tmp_path)
    assert code == 0, output
    assert "FAIL  failed in the bwrap sandbox but runs without it" in output
    assert "FileNotFoundError" in output  # the log's last lines
    assert "ok    metric score = 0.5" in output
    assert "CONFIRM: the probe's run failed" in (folder / "task.toml").read_text()


def test_init_probe_on_the_bundled_example(tmp_path: Path) -> None:
    """The example without its task.toml: command, evaluation, metric, frozen and hidden files,
    search space, all from what the runs showed."""
    folder = tmp_path / "mil-stain"
    shutil.copytree(EXAMPLE, folder, ignore=shutil.ignore_patterns(".ara", "task.toml", "predictions.json"))
    code, output = _init(["init", "--probe", "--steps", "5", str(folder)], tmp_path)
    assert code == 0, output
    data = _toml(folder)
    assert data["task"]["command"] == "python train.py" and data["task"]["eval"] == "python evaluate.py"
    assert data["metric"]["name"] == "macro_f1" and data["metric"]["goal"] == "max"
    assert data["budget"]["steps"] == 400
    assert data["surface"]["allow"] == ["train.py", "config.toml"]
    assert data["surface"]["freeze"] == ["evaluate.py", "prepare.py", "data/val_bags.npz"]
    assert data["surface"]["hidden"] == ["data/val_labels.npy"]
    assert data["search"]["config"] == "config.toml" and "lr" in data["search"]["space"]
    _commit(folder)
    code, output = _init(["submit", "task.toml", "--check", "--set", "run.executor=local"], folder)
    assert code == 0, output
