"""Task validation: every broken task exits 2 with one line naming the problem, and creates nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from slurm_autoresearch.cli import main
from slurm_autoresearch.loop.preflight import load_task

from .conftest import TASK, commit_all, git, repo_state, write_task


def _replace(old: str, new: str) -> str:
    base = TASK.format(trials=6, parallel=2)
    assert old in base, old
    return base.replace(old, new)


BROKEN = {
    "missing key": (_replace('command = "python train.py"\n', ""), "missing key 'command' in [task]"),
    "unknown key": (
        _replace("trials = 6", "trails = 6"),
        "unknown key 'trails' in [budget]; valid keys: steps",
    ),
    "unknown section": (
        _replace("[run]", "[runn]"),
        "unknown key 'runn' in top level; valid keys: task, metric",
    ),
    "wrong type": (
        _replace("trials = 6", 'trials = "6"'),
        "[budget] trials: found '6', expected a valid integer",
    ),
    "bool for int": (_replace("parallel = 2", "parallel = true"), "[run] parallel: found True"),
    "goal": (
        _replace('goal = "max"', 'goal = "maximize"'),
        "[metric] goal: found 'maximize', expected 'min' or 'max'",
    ),
    "negative budget": (
        _replace("trials = 6", "trials = -3"),
        "[budget] trials: found -3, expected greater than 0",
    ),
    "negative steps": (
        _replace("steps = 5", "steps = 0"),
        "[budget] steps: found 0, expected greater than 0",
    ),
    "bad glob": (_replace('"src/**"', '"src/[oops"'), "[surface]: glob 'src/[oops': unclosed '['"),
    "glob escapes": (_replace('"src/**"', '"../*.py"'), "climbs out with '..'"),
    "frozen file missing": (
        _replace('freeze = ["evaluate.py"]', 'freeze = ["eval.py"]'),
        "[surface] freeze: 'eval.py' matches no committed file",
    ),
    "command not found": (
        _replace('command = "python train.py"', 'command = "trian-ara-nope --fast"'),
        "[task] command: command not found: 'trian-ara-nope'",
    ),
    "eval not found": (
        _replace('eval = "python evaluate.py"', 'eval = "./nope.sh"'),
        "[task] eval: command not found: './nope.sh'",
    ),
    "space key not in config": (_replace("y = {", "z = {"), "[search.space] 'z' is not a key of config.toml"),
    "bad range": (
        _replace("x = { low = -5.0, high = 5.0 }", "x = { low = 5.0, high = -5.0 }"),
        "'low' (5.0) must be below 'high' (-5.0)",
    ),
    "not toml": ("[task\nname=", "not valid TOML"),
    "bad metric type": (_replace('name = "score"', "name = 3"), "[metric] name: found 3"),
    "idea search text with the wrong indent": (
        TASK.format(trials=6, parallel=2)
        + '[[ideas]]\ntitle = "no boom"\n[[ideas.edits]]\npath = "train.py"\n'
        + 'search = "  raise RuntimeError(\\"boom from train.py\\")\\n"\nreplace = "  pass\\n"\n',
        "[[ideas]] 'no boom', edit 1 (train.py): search text occurs only inside a line (line 12)",
    ),
    "idea search text not there": (
        TASK.format(trials=6, parallel=2)
        + '[[ideas]]\ntitle = "gone"\nedits = [{ path = "train.py", search = "lr = 3\\n", replace = "" }]\n',
        "[[ideas]] 'gone', edit 1 (train.py): search text not found",
    ),
    "idea edits a frozen file": (
        TASK.format(trials=6, parallel=2)
        + '[[ideas]]\ntitle = "peek"\nedits = [{ path = "evaluate.py", search = "", replace = "x" }]\n',
        "[[ideas]] 'peek', edit 1 (evaluate.py): evaluate.py is frozen",
    ),
    "idea without change": (
        TASK.format(trials=6, parallel=2) + '[[ideas]]\ntitle = "x"\n',
        "[ideas #1]: an idea needs 'config' values or 'edits'",
    ),
}


def _invoke(args: list[str], cwd: Path) -> tuple[int, str]:
    runner = CliRunner()
    old = Path.cwd()
    os.chdir(cwd)
    try:
        result = runner.invoke(main, args)
    finally:
        os.chdir(old)
    return result.exit_code, result.output


def _assert_nothing_created(repo: Path, before: tuple[str, ...], refs_before: str) -> None:
    assert not (repo / ".ara").exists()
    assert git(repo, "for-each-ref") == refs_before
    assert repo_state(repo)[:3] == before[:3]


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_task_exits_2_with_one_line(toy_repo: Path, case: str) -> None:
    text, expected = BROKEN[case]
    path = toy_repo / "broken.toml"
    path.write_text(text)
    before, refs = repo_state(toy_repo), git(toy_repo, "for-each-ref")
    code, output = _invoke(["submit", str(path)], toy_repo)
    assert code == 2, output
    lines = output.strip().splitlines()
    assert len(lines) == 1, output
    assert lines[0].startswith("ara: error: ")
    assert expected in lines[0]
    assert str(path) in lines[0]
    _assert_nothing_created(toy_repo, before, refs)


def test_repo_not_a_git_repo(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    plain.mkdir()
    path = write_task(plain)
    code, output = _invoke(["submit", str(path)], plain)
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert "is not inside a git repository" in output
    assert not (plain / ".ara").exists()


def test_explicit_repo_not_a_git_repo(toy_repo: Path, tmp_path: Path) -> None:
    (tmp_path / "notgit").mkdir()
    path = write_task(
        toy_repo, base=_replace('name = "toy"', f'name = "toy"\nrepo = "{tmp_path / "notgit"}"')
    )
    code, output = _invoke(["submit", str(path)], toy_repo)
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert "[task] repo:" in output and "is not a git repository" in output
    assert not (toy_repo / ".ara").exists()


def test_uncommitted_changes_inside_the_edit_surface(toy_repo: Path) -> None:
    (toy_repo / "train.py").write_text("# edited but not committed\n")
    before, refs = repo_state(toy_repo), git(toy_repo, "for-each-ref")
    code, output = _invoke(["submit", "task.toml"], toy_repo)
    assert code == 2 and len(output.strip().splitlines()) == 1
    assert "uncommitted changes inside the edit surface: train.py" in output
    _assert_nothing_created(toy_repo, before, refs)


def test_uncommitted_changes_outside_the_surface_are_fine(toy_repo: Path) -> None:
    (toy_repo / "README.md").write_text("notes in progress\n")
    task = load_task(toy_repo / "task.toml")
    assert task.workdir == "."


def test_missing_task_file(tmp_path: Path) -> None:
    code, output = _invoke(["submit", "nope.toml"], tmp_path)
    assert code == 2
    assert "no such task file" in output


def test_check_validates_without_creating(toy_repo: Path) -> None:
    code, output = _invoke(["submit", "--check", "task.toml"], toy_repo)
    assert code == 0, output
    assert "ok: toy" in output
    assert not (toy_repo / ".ara").exists()


def test_workdir_defaults_to_the_task_files_directory(toy_repo: Path) -> None:
    sub = toy_repo / "exp"
    sub.mkdir()
    for name in ("train.py", "evaluate.py", "config.toml"):
        (sub / name).write_text((toy_repo / name).read_text())
    (sub / "task.toml").write_text(TASK.format(trials=3, parallel=1))
    commit_all(toy_repo, "exp")
    task = load_task(sub / "task.toml")
    assert task.workdir == "exp"
    assert task.repo == toy_repo.resolve()


def test_gpus_needed_but_absent(toy_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    path = write_task(toy_repo, "\n[resources]\ngpus_per_trial = 1\n")
    code, output = _invoke(["submit", str(path)], toy_repo)
    assert code == 2
    assert "need 2 GPUs, 0 found" in output


def test_ideas_config_needs_search_config(toy_repo: Path) -> None:
    base = TASK.format(trials=3, parallel=1).split("[search]")[0]
    path = write_task(toy_repo, '[[ideas]]\ntitle = "t"\nconfig = { x = 1.0 }\n', base=base)
    code, output = _invoke(["submit", str(path)], toy_repo)
    assert code == 2
    assert "[search] config is not set" in output


def test_check_says_which_executor_auto_picked_and_why(
    toy_repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import shutil

    code, output = _invoke(["submit", "--check", "task.toml", "--set", "run.executor=local"], toy_repo)
    assert code == 0 and 'executor: local ([run] executor = "local")' in output, output
    bin_dir = tmp_path / "bin"  # git, but no sbatch: what a laptop has
    bin_dir.mkdir()
    (bin_dir / "git").symlink_to(shutil.which("git") or "/usr/bin/git")
    monkeypatch.setenv("PATH", str(bin_dir))
    code, output = _invoke(["submit", "--check", "task.toml", "--set", "run.executor=auto"], toy_repo)
    assert code == 0 and "executor: local (auto: no sbatch on PATH;" in output, output
    sbatch = shutil.which("sbatch", path=os.environ.get("ARA_TEST_SLURM_PATH", "/usr/bin:/usr/local/bin"))
    if sbatch:
        (bin_dir / "sbatch").symlink_to(sbatch)
        (bin_dir / "sacct").symlink_to(Path(sbatch).with_name("sacct"))
        code, output = _invoke(["submit", "--check", "task.toml", "--set", "run.executor=auto"], toy_repo)
        assert f"executor: slurm (auto: sbatch is on PATH at {bin_dir / 'sbatch'};" in output, output
