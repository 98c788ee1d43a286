"""Option combinations, rendering with pytest-cookies, and running a rendered project's tools."""

from __future__ import annotations

import functools
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROMPTS: dict[str, Any] = json.loads((ROOT / "cookiecutter.json").read_text())
TOOLS_BIN = Path(sys.executable).parent
COMMAND_TIMEOUT_S = 1500  # an upper bound for a loaded 2-core machine, not a speed


@dataclass(frozen=True)
class Combo:
    """One answer for each choice option; the free-text options keep their defaults."""

    python_version: str
    cache_backend: str
    example_tasks: str
    ci: str
    database: str = "none"

    @property
    def id(self) -> str:
        return (
            f"py{self.python_version}-{self.cache_backend}"
            f"-examples_{self.example_tasks}-db_{self.database}-ci_{self.ci}"
        )

    @property
    def package(self) -> str:
        """The package of the default project name, which every combination keeps."""
        return str(PROMPTS["project_name"]).lower().replace(" ", "_")

    @property
    def has_tasks(self) -> bool:
        return self.cache_backend != "none"

    @property
    def has_database(self) -> bool:
        """The database needs the task layer (enqueue on commit); without one it is ignored."""
        return self.has_tasks and self.database == "postgres"

    @property
    def checked_as(self) -> Combo:
        """The combination whose project checks stand for this one.

        Combinations that differ only in `ci` render the same project apart from the workflow,
        and without a task layer `example_tasks` and `database` change nothing: each such group
        runs the project's lint, type check and tests once, on this member
        (test_render.test_combinations_sharing_checks_render_the_same_project proves the rest of
        each group renders the same files).
        """
        examples = self.example_tasks if self.has_tasks else "no"
        database = self.database if self.has_tasks else "none"
        return replace(self, example_tasks=examples, database=database, ci="github")

    @property
    def group_id(self) -> str:
        """The id of the combinations `checked_as` stands for: "any" where they differ."""
        examples = self.example_tasks if self.has_tasks else "any"
        database = self.database if self.has_tasks else "any"
        return (
            f"py{self.python_version}-{self.cache_backend}-examples_{examples}-db_{database}-ci_any"
        )

    @property
    def runs_project_tests(self) -> bool:
        """Whether the project's own tests run for this group, not only its lint and type check.

        Every Python 3.11 group runs them; each other Python runs them on one group with every
        part on (the database, the examples), the two Pythons on different brokers. What differs
        between Pythons is caught by the type check, which runs everywhere against its version.
        """
        full = {"3.12": ("falkordb", "yes", "postgres"), "3.13": ("redis", "yes", "postgres")}
        group = self.checked_as
        wanted = full.get(group.python_version)
        return wanted is None or wanted == (
            group.cache_backend,
            group.example_tasks,
            group.database,
        )

    @property
    def slow_tests_run_on(self) -> Combo | None:
        """The group whose run of the project's slow tests (marked `slow`: worker processes,
        faults, load) stands for this group's: one per broker, on Python 3.11 with every part
        on; None where this group is that one, or has no broker. Its other groups run the slow
        tests of any test file whose copy differs from that group's (test_projects)."""
        if not self.has_tasks:
            return None
        group = self.checked_as
        full = replace(group, python_version="3.11", example_tasks="yes", database="postgres")
        return None if full == group else full

    def context(self) -> dict[str, str]:
        return asdict(self)


def selected(combo: Combo) -> bool:
    """TEMPLATE_COMBOS="python_version=3.12,cache_backend=redis" narrows the run (CI matrix)."""
    wanted = [
        item.split("=", 1) for item in os.environ.get("TEMPLATE_COMBOS", "").split(",") if item
    ]
    return all(combo.context()[key] == value for key, value in wanted)


COMBOS = [
    combo
    for combo in (
        Combo(*values)
        for values in itertools.product(
            PROMPTS["python_version"],
            PROMPTS["cache_backend"],
            PROMPTS["example_tasks"],
            PROMPTS["ci"],
            PROMPTS["database"],
        )
    )
    if selected(combo)
]


# One member of each group of combinations that share the project's checks (Combo.checked_as),
# for every group the selected combinations touch.
CHECKED = list(dict.fromkeys(combo.checked_as for combo in COMBOS))


def combo_params(
    select: Callable[[Combo], bool] = lambda combo: True,
    suffix: Callable[[Combo], str] = lambda combo: "",
) -> list[Any]:
    """The selected combinations as pytest params. Those that share their project checks go to
    one xdist worker together, which renders each of them once."""
    return [
        pytest.param(combo, id=combo.id + suffix(combo), marks=group_mark(combo))
        for combo in COMBOS
        if select(combo)
    ]


def checked_params(suffix: Callable[[Combo], str] = lambda combo: "") -> list[Any]:
    """One param for each group of combinations that share the project's checks."""
    return [
        pytest.param(combo, id=combo.group_id + suffix(combo), marks=group_mark(combo))
        for combo in CHECKED
    ]


def group_mark(combo: Combo) -> pytest.MarkDecorator:
    return pytest.mark.xdist_group(combo.checked_as.group_id)


@pytest.fixture(scope="session")
def bake(cookies_session: Any) -> Callable[[Combo], Path]:
    """Render a combination once per test process and return the project folder."""
    rendered: dict[Combo, Path] = {}

    def render(combo: Combo) -> Path:
        if combo not in rendered:
            result = cookies_session.bake(extra_context=combo.context())
            assert result.exception is None, result.exception
            assert result.exit_code == 0
            rendered[combo] = Path(result.project_path)
        return rendered[combo]

    return render


@functools.cache
def find_python(version: str) -> str | None:
    """An interpreter for `version`: one uv finds, else a pyenv install; None when there is none."""
    found = subprocess.run(
        [str(TOOLS_BIN / "uv"), "python", "find", "--no-project", version],
        capture_output=True,
        text=True,
        env=tool_env(),
        check=False,
    )
    candidates = [found.stdout.strip()] if found.returncode == 0 else []
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(
        str(p) for p in pyenv_root.glob(f"versions/{version}.*/bin/python{version}")
    )
    for candidate in candidates:
        if candidate and subprocess.run([candidate, "-c", "pass"], check=False).returncode == 0:
            return candidate
    return None


def tool_env(python: str | None = None) -> dict[str, str]:
    """The environment for a rendered project's commands: our tools first, no outer venv."""
    env = {
        key: value for key, value in os.environ.items() if key not in {"VIRTUAL_ENV", "REDIS_URL"}
    }
    env["PATH"] = f"{TOOLS_BIN}{os.pathsep}{env.get('PATH', '')}"
    env["UV_PYTHON_DOWNLOADS"] = "never"
    env["UV_NO_PROGRESS"] = "1"
    if python:
        env["UV_PYTHON"] = python
    return env


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None, stdin: Any = None) -> str:
    """Run a command; on failure, fail the test with the command and the end of its output.

    It runs in a session of its own: past COMMAND_TIMEOUT_S the whole session is killed, so
    that the servers and workers a project's tests started do not outlive it and load the
    machine for the tests after it."""
    with subprocess.Popen(
        command,
        cwd=cwd,
        env=env or tool_env(),
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=COMMAND_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            stdout, stderr = process.communicate()
            pytest.fail(
                f"`{' '.join(command)}` did not end within {COMMAND_TIMEOUT_S} s:\n"
                f"{stdout[-6000:]}\n--- stderr ---\n{stderr[-3000:]}"
            )
    if process.returncode != 0:
        # The end of each stream: a test run's summary (stdout) is not buried under the
        # servers' logs (stderr).
        pytest.fail(
            f"`{' '.join(command)}` exited {process.returncode}:\n"
            f"{stdout[-6000:]}\n--- stderr ---\n{stderr[-3000:]}"
        )
    return stdout + stderr


def dev_api_key(project: Path) -> str:
    """The development key the post-gen hook wrote into the project's .env (every scope)."""
    lines = (project / ".env").read_text().splitlines()
    pairs = (line.partition("=") for line in lines if "=" in line and not line.startswith("#"))
    return {key: value for key, _, value in pairs}["DEV_API_KEY"]


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def rendered_files(project: Path) -> Iterator[Path]:
    return (path for path in project.rglob("*") if path.is_file() and ".venv" not in path.parts)


def tool(name: str) -> str:
    path = shutil.which(name, path=str(TOOLS_BIN)) or shutil.which(name)
    assert path, f"{name} is not installed: run the tests through `python3 scripts/just.py test`"
    return path
