"""Container and CI files, validated without Docker: schemas, hadolint, zizmor, and what the
image installs."""

from __future__ import annotations

import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, Combo, combo_params, run, tool


@pytest.mark.parametrize("combo", combo_params())
def test_compose_file_matches_the_compose_specification(
    combo: Combo, bake: Callable[[Combo], Path]
) -> None:
    """It validates against the Compose specification's JSON schema."""
    project = bake(combo)
    run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "docker-compose.yml"],
        project,
    )


@pytest.mark.parametrize("combo", combo_params())
def test_dockerfile_passes_hadolint(combo: Combo, bake: Callable[[Combo], Path]) -> None:
    """It has no hadolint finding, down to the info level, and runs as a non-root user."""
    project = bake(combo)
    run([tool("hadolint"), "--failure-threshold", "info", "Dockerfile"], project)
    dockerfile = (project / "Dockerfile").read_text()
    assert dockerfile.count("FROM ") == 2
    assert f"python:{combo.python_version}-slim" in dockerfile
    assert "--no-dev" in dockerfile
    assert "\nUSER 10001" in dockerfile


@pytest.mark.parametrize("combo", combo_params(lambda combo: combo.ci == "github"))
def test_project_workflow_passes_schema_and_zizmor(
    combo: Combo, bake: Callable[[Combo], Path]
) -> None:
    """It validates against the GitHub workflow schema and has no zizmor finding."""
    project = bake(combo)
    workflow = ".github/workflows/ci.yml"
    run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", workflow], project
    )
    run([tool("zizmor"), "--offline", "--no-progress", workflow], project)


@pytest.mark.parametrize("combo", combo_params(lambda combo: combo.ci == "github"))
def test_dependabot_keeps_every_kind_of_dependency_current(
    combo: Combo, bake: Callable[[Combo], Path]
) -> None:
    """It validates against Dependabot's schema, has no zizmor finding, and updates the uv
    project, the Dockerfile's and compose file's images and the workflow's actions."""
    project = bake(combo)
    config = ".github/dependabot.yml"
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.dependabot", config], project)
    run([tool("zizmor"), "--offline", "--no-progress", config], project)
    updates = yaml.safe_load((project / config).read_text())["updates"]
    ecosystems = {update["package-ecosystem"] for update in updates}
    assert ecosystems == {"uv", "docker", "docker-compose", "github-actions"}


def test_template_workflow_passes_schema_and_zizmor() -> None:
    """It holds the template's own workflow to the same bar."""
    workflow = ".github/workflows/ci.yml"
    run([tool("check-jsonschema"), "--builtin-schema", "vendor.github-workflows", workflow], ROOT)
    run([tool("zizmor"), "--offline", "--no-progress", workflow], ROOT)


def builds_the_wheel(combo: Combo) -> bool:
    """The wheel's files do not depend on the Python version or `ci`: one build per backend and
    examples choice, with the Python every machine here has."""
    return combo.has_tasks and combo.python_version == "3.11" and combo == combo.checked_as


@pytest.mark.parametrize("combo", combo_params(builds_the_wheel))
def test_the_wheel_and_so_the_image_leave_the_devtools_out(
    combo: Combo, bake: Callable[[Combo], Path], tmp_path: Path
) -> None:
    """The image installs the project's wheel (`uv sync --no-editable`): the development tools
    (`just dev`, `just bench`, the embedded server) are not in it, the service is, with the
    console's templates and static files."""
    project = tmp_path / "project"
    shutil.copytree(bake(combo), project)
    run([tool("uv"), "build", "--wheel", "--quiet", "--out-dir", str(tmp_path / "dist")], project)
    [wheel] = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert f"{combo.package}/main.py" in names
    assert f"{combo.package}/infrastructure/tasks.py" in names
    assert [name for name in names if "/devtools/" in name] == []
    package = bake(combo) / "src" / combo.package
    shipped = {
        str(path.relative_to(package.parent))
        for path in (package / "console").rglob("*")
        if path.is_file()
    }
    assert shipped
    assert shipped <= set(names)
