"""Every project name the hook accepts renders a project that passes its own lint and type check.

The name reaches imports, settings defaults, commands and docstrings. A line that fits in 100
columns for one name and not for another would make ruff format wrap it differently, so each
option set that changes long lines is rendered under several names: one letter, a common short
name, one with digits, the longest slug the pre-generation hook allows, and the longest human
name beside a short slug. Each is ruff clean and mypy strict clean with the project's own
configuration, from one environment (the first name's) and one shared mypy cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ROOT, run, tool, tool_env
from cookiecutter.main import cookiecutter

# (project_name, project_slug): None derives the slug from the name as a user's render does.
NAMES: list[tuple[str, str | None]] = [
    ("A", None),
    ("Orders API", None),
    ("Inventory Sync 2", None),
    ("Warehouse Inventory Reconciliation Tasks", None),  # 40 characters: MAX_SLUG_LENGTH
    ("Northwind Traders Warehouse Inventory Reconciliation Service", "northwind"),  # 60
]


@pytest.mark.parametrize(
    ("backend", "examples", "database", "typecheck"),
    [
        ("redis", "yes", "postgres", True),
        ("redis", "no", "none", False),
        ("falkordb", "yes", "none", False),
        ("falkordb", "no", "postgres", False),
        ("none", "no", "none", True),
    ],
)
def test_every_name_renders_a_project_that_passes_its_own_checks(
    backend: str, examples: str, database: str, typecheck: bool, tmp_path: Path
) -> None:
    """It renders each name with these options; ruff finds nothing to fix or reformat, and
    (for the fullest option set and the smallest) mypy --strict finds no error."""
    assert len(NAMES[3][0]) == 40
    assert len(NAMES[4][0]) == 60
    env = tool_env()
    cache = tmp_path / "mypy-cache"
    python: Path | None = None
    for name, slug in NAMES:
        context = {
            "project_name": name,
            "cache_backend": backend,
            "example_tasks": examples,
            "database": database,
        }
        if slug:
            context["project_slug"] = slug
        project = Path(
            cookiecutter(str(ROOT), no_input=True, output_dir=str(tmp_path), extra_context=context)
        )
        if python is None:
            run([tool("uv"), "sync", "--quiet"], project, env)
            python = project / ".venv/bin/python"
        run([str(python), "-m", "ruff", "check", "--no-cache", "."], project, env)
        run([str(python), "-m", "ruff", "format", "--check", "--no-cache", "."], project, env)
        if typecheck:
            run([str(python), "-m", "mypy", "--cache-dir", str(cache)], project, env)
