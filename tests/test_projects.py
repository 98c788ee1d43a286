"""Each rendered project passes its own lint, type check and tests.

Combinations that render the same project apart from their CI workflow share one run
(`Combo.checked_as`); the test id names the group with "any" for what varies. Where an
interpreter for the combination's Python exists here, the project's own `just lint`,
`just typecheck` and `just test` run as a user would run them; on Python 3.12 and 3.13 the
tests run for one group each (`Combo.runs_project_tests`, to keep CI's time), lint and type
check for all, and the test id says which. Where no interpreter exists, the test id says so and
the same ruff and mypy configuration runs from a Python 3.11 environment (mypy checks against
the target version); the project's tests then cannot run on this machine.

The project's slow tests (marked `slow`: worker processes, faults, load; about two thirds of a
run's time) run in full on one group per broker, Python 3.11 with every part on
(`Combo.slow_tests_run_on`); each other group runs the rest, and the slow tests of every test
file whose copy differs from that group's. The test id names the group that stands in.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import Combo, checked_params, find_python, run, tool, tool_env


def mode(combo: Combo) -> str:
    if not find_python(combo.python_version):
        return f"-lint+typecheck-only(no-python{combo.python_version}-here)"
    if not combo.runs_project_tests:
        return f"-lint+typecheck(tests-on-one-py{combo.python_version}-group)"
    stand_in = combo.slow_tests_run_on
    if stand_in is None:
        return "-lint+typecheck+tests"
    return f"-lint+typecheck+tests(slow-ones-on-{stand_in.group_id})"


def slow_test_files_unlike(project: Path, other: Path) -> list[str]:
    """The project's test files with slow tests whose copy in `other` differs or is missing:
    what `other`'s run of its slow tests does not stand for."""
    own = []
    for path in sorted((project / "tests").glob("test_*.py")):
        if "pytest.mark.slow" not in path.read_text():
            continue
        twin = other / "tests" / path.name
        if not twin.exists() or twin.read_bytes() != path.read_bytes():
            own.append(f"tests/{path.name}")
    return own


@pytest.fixture
def workdir() -> Iterator[Path]:
    """A folder for the project outside pytest's temporary root. Run as root, the embedded
    PostgreSQL runs its server as a user of its own and opens the folders above its binaries
    to that user; every pytest session (the project's own, beside) sets pytest's root back to
    0700 as it starts, which would cut such a server off from its binaries."""
    with tempfile.TemporaryDirectory(prefix="project-checks-") as folder:
        yield Path(folder)


@pytest.fixture(scope="session")
def mypy_caches(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One mypy cache per Python version for the groups this test process checks: mypy
    reuses what it checked of a file whose content it has seen (the third-party packages,
    the files groups share), so each group's type check does only what is its own."""
    return tmp_path_factory.mktemp("mypy-caches")


@pytest.mark.project_checks
@pytest.mark.parametrize("combo", checked_params(suffix=mode))
def test_project_passes_its_own_checks(
    combo: Combo, bake: Callable[[Combo], Path], workdir: Path, mypy_caches: Path
) -> None:
    """It is ruff clean, mypy --strict clean and its tests pass against a real server."""
    project = workdir / "project"
    shutil.copytree(bake(combo), project)  # the checks write caches; keep the render pristine
    python = find_python(combo.python_version)
    if python:
        env = tool_env(python)
        env["MYPY_CACHE_DIR"] = str(mypy_caches / combo.python_version)
        for recipe in ("lint", "typecheck"):
            run([tool("just"), recipe], project, env)
        if not combo.runs_project_tests:
            return
        stand_in = combo.slow_tests_run_on
        if stand_in is None:
            run([tool("just"), "test"], project, env)
            return
        run([tool("just"), "test", "-m", "not slow"], project, env)
        own_slow = slow_test_files_unlike(project, bake(stand_in))
        if own_slow:
            run([tool("just"), "test", "-m", "slow", *own_slow], project, env)
        return
    env = tool_env()
    venv = project / ".venv"
    run([tool("uv"), "venv", "--python", "3.11", str(venv)], project, env)
    install = [tool("uv"), "pip", "install", "--python", str(venv), "-r", "pyproject.toml"]
    run([*install, "--group", "dev"], project, env)
    run([str(venv / "bin/ruff"), "check", "."], project, env)
    run([str(venv / "bin/ruff"), "format", "--check", "."], project, env)
    run([str(venv / "bin/mypy")], project, env)
