"""The package's layers hold: no import cycles, no group importing above itself, a light read side."""

from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path
from types import ModuleType

from .ledgers import synthetic_run

ROOT = Path(__file__).resolve().parents[1]
# The commands that only read a run, in a fresh interpreter; it prints what they loaded that the
# read side must not: pydantic (the schema is the writer's business) and the controller's modules.
READ_RUN = """
import json, sys
from slurm_autoresearch.cli import main

root, commands = sys.argv[1], json.loads(sys.argv[2])
for args in commands:
    code = main([*args, "--root", root], standalone_mode=False)
    assert not code, f"ara {' '.join(args)} exited {code}"
banned = {"pydantic"} & set(sys.modules) | {m for m in sys.modules if m.startswith("slurm_autoresearch.loop")}
print(json.dumps(sorted(banned)))
"""


def _imports_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ara_imports", ROOT / "scripts" / "imports.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_no_import_cycles_and_no_layer_violations() -> None:
    imports = _imports_script()
    graph = imports.build_graph()
    assert "slurm_autoresearch.cli" in graph and "slurm_autoresearch.views.status" in graph
    cycles, violations = imports.cycles(graph), imports.violations(graph)
    assert cycles == [], "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
    assert violations == [], "layer violations:\n" + "\n".join(violations)


def test_the_checker_sees_an_import_inside_a_function_and_a_cycle(tmp_path: Path) -> None:
    imports = _imports_script()
    package = tmp_path / "slurm_autoresearch"
    (package / "views").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "views" / "__init__.py").write_text("")
    (package / "task.py").write_text("def f():\n    from .views import status\n")
    (package / "views" / "status.py").write_text("from ..task import f\n")
    graph = imports.build_graph(package)
    assert imports.cycles(graph) == [["slurm_autoresearch.task", "slurm_autoresearch.views.status"]]
    assert imports.violations(graph) == [
        "slurm_autoresearch.task:2 imports slurm_autoresearch.views (core may not import views)",
        "slurm_autoresearch.task:2 imports slurm_autoresearch.views.status (core may not import views)",
    ]


def _read_side_loads(tmp_path: Path, commands: list[list[str]]) -> list[str]:
    rundir = synthetic_run(tmp_path / "ara")  # run id toy-synthetic
    log = rundir.trial_dir("T0001") / "train.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("[ara] trial T0001\nstep 5/5 loss 0.1\n")
    out = subprocess.run(
        [sys.executable, "-c", READ_RUN, str(tmp_path / "ara"), json.dumps(commands)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout.splitlines()[-1])


def test_reading_a_run_loads_neither_pydantic_nor_the_loop(tmp_path: Path) -> None:
    commands = [
        ["status", "toy-synthetic"],
        ["status", "toy-synthetic", "--json"],
        ["status", "--all"],
        ["export", "toy-synthetic"],
        ["export", "toy-synthetic", "--format", "jsonl"],
        ["watch", "toy-synthetic", "--once"],
        ["logs", "toy-synthetic", "T0001"],
    ]
    loaded = _read_side_loads(tmp_path, commands)
    assert loaded == [], f"reading a run loaded {loaded}"


def test_a_report_reads_the_spec_but_never_loads_the_loop(tmp_path: Path) -> None:
    # `ara report` and `ara show` print the task's own settings (description, budgets, fidelity),
    # which only TaskSpec's defaults define for a run's task.toml copy: they parse it with pydantic
    # rather than keep a second reader of the schema that could drift from it.
    loaded = _read_side_loads(tmp_path, [["report", "toy-synthetic"], ["show", "toy-synthetic", "T0001"]])
    assert [m for m in loaded if m != "pydantic"] == [], f"a report loaded {loaded}"


def test_every_module_over_400_lines_says_why() -> None:
    unexplained = []
    for path in sorted((ROOT / "slurm_autoresearch").rglob("*.py")):
        text = path.read_text()
        lines, docstring = len(text.splitlines()), ast.get_docstring(ast.parse(text)) or ""
        second = [*docstring.split("\n\n"), ""][1]
        if lines > 400 and not second.startswith("Over 400 lines: "):
            unexplained.append(f"{path.relative_to(ROOT)}: {lines} lines")
    assert unexplained == [], (
        "split these modules along a seam, or give the reason in the docstring's second paragraph, "
        "starting 'Over 400 lines: ':\n" + "\n".join(unexplained)
    )
