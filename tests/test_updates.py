"""A project made with `cruft create` takes template improvements with `cruft update`.

Each test renders the template as it was at UPDATE_FROM, commits the result as a user would
(their `.env` with its secrets stays local and git-ignored), updates it to the template under
test and checks that the update applied whole: no conflict, no `.rej` file, the secrets kept,
the files those of a fresh render, and the project's own `just lint` and `just test` passing.
The default project also turns on, in the same update, the options it was rendered without
(`--variables-to-update`): the database, then migrated on the embedded server, and the examples.
Its files are then those of a fresh render with the options on, whose slow tests (worker
processes, faults, load) test_projects runs: here the rest of its tests run.
"""

from __future__ import annotations

import filecmp
import json
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import ROOT, Combo, find_python, rendered_files, run, selected, tool, tool_env
from cookiecutter.main import cookiecutter

# The oldest commit whose renders tell cruft to leave `.env` alone ([tool.cruft] skip in
# pyproject.toml). Projects rendered earlier need that table added once before updating.
UPDATE_FROM = "b08f4623b49359eaf56607c8f86ee4b86246fcc8"
# `just migrate` on an embedded PostgreSQL of the project's own, as a user with no server of
# their own would run it; then the revision the database is at.
MIGRATE_ON_EMBEDDED_SERVER = [
    "uv",
    "run",
    "python",
    "-c",
    "import os, subprocess, sys\n"
    "from media_service.devtools.embedded_postgres import EmbeddedPostgres\n"
    "with EmbeddedPostgres() as server:\n"
    "    env = {**os.environ, 'DATABASE_URL': server.url}\n"
    "    subprocess.run(['just', 'migrate'], env=env, check=True)\n"
    "    current = [sys.executable, '-m', 'media_service.migrate', 'current']\n"
    "    subprocess.run(current, env=env, check=True)\n",
]
USER = {
    "GIT_AUTHOR_NAME": "A User",
    "GIT_AUTHOR_EMAIL": "user@example.com",
    "GIT_COMMITTER_NAME": "A User",
    "GIT_COMMITTER_EMAIL": "user@example.com",
}
# A project rendered with these answers, and the answers its update changes.
COMBOS = [
    pytest.param(combo, turned_on, id=name)
    for name, combo, turned_on in [
        (
            "default, then database and examples on",
            Combo("3.11", "redis", "no", "github"),
            {"database": "postgres", "example_tasks": "yes"},
        ),
        ("cache_backend_none", Combo("3.11", "none", "no", "github"), {}),
    ]
    if selected(combo)
]


def git(*args: str, cwd: Path) -> str:
    return run(["git", "-c", "init.defaultBranch=main", *args], cwd, {**tool_env(), **USER})


@pytest.fixture(scope="session")
def template_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clone of this repository whose newest commit is its working tree as it is now, so that
    the update brings the template under test, uncommitted changes included."""
    known = subprocess.run(
        ["git", "cat-file", "-e", f"{UPDATE_FROM}^{{commit}}"], cwd=ROOT, check=False
    )
    assert known.returncode == 0, (
        f"the template's history lacks {UPDATE_FROM}: fetch all of it (git fetch --unshallow)"
    )
    clone = tmp_path_factory.mktemp("template") / "repo"
    git("clone", "--quiet", str(ROOT), str(clone), cwd=ROOT)
    listed = git("ls-files", "-z", "--cached", "--others", "--exclude-standard", cwd=ROOT)
    present = {name for name in listed.split("\0") if name and (ROOT / name).is_file()}
    for name in git("ls-files", "-z", cwd=clone).split("\0"):
        if name and name not in present:
            (clone / name).unlink()
    for name in present:
        (clone / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, clone / name)
    git("add", "--all", cwd=clone)
    git("commit", "--quiet", "--allow-empty", "-m", "The template under test", cwd=clone)
    return clone


@pytest.mark.project_checks
@pytest.mark.parametrize(("combo", "turned_on"), COMBOS)
def test_cruft_update_applies_cleanly_and_keeps_secrets(
    combo: Combo, turned_on: dict[str, str], template_repo: Path, tmp_path: Path
) -> None:
    """It updates a committed project to the template under test, turning on the options
    `turned_on` names, with no conflict, keeps the local `.env`, ends with the files of a
    fresh render with those answers and passes the project's checks."""
    cruft = tool("cruft")
    context = json.dumps(combo.context())
    create = [cruft, "create", str(template_repo), "--checkout", UPDATE_FROM, "--no-input"]
    run([*create, "--extra-context", context, "--output-dir", str(tmp_path)], tmp_path)
    project = tmp_path / "media-service"
    secrets = (project / ".env").read_text()
    git("init", "--quiet", cwd=project)
    git("add", "--all", cwd=project)
    git("commit", "--quiet", "-m", "A service made from the template", cwd=project)
    assert ".env" not in git("ls-files", cwd=project).split()

    update = [cruft, "update", "--skip-apply-ask"]
    if turned_on:
        update += ["--variables-to-update", json.dumps(turned_on)]
    output = run(update, project)

    assert "rej" not in output, output
    assert [path for path in rendered_files(project) if path.suffix in {".rej", ".orig"}] == []
    assert git("ls-files", "--unmerged", cwd=project) == ""
    changed = git("status", "--porcelain", cwd=project).splitlines()
    assert [line for line in changed if not line.endswith(".cruft.json")], "nothing was updated"
    assert (project / ".env").read_text() == secrets
    head = git("rev-parse", "HEAD", cwd=template_repo).strip()
    recorded = json.loads((project / ".cruft.json").read_text())
    assert recorded["commit"] == head
    combo = replace(combo, **turned_on)
    assert recorded["context"]["cookiecutter"]["__database"] == combo.database
    assert recorded["context"]["cookiecutter"]["__examples"] == combo.example_tasks

    fresh = Path(
        cookiecutter(
            str(template_repo),
            no_input=True,
            output_dir=str(tmp_path / "fresh"),
            extra_context=combo.context(),
        )
    )
    names = sorted(
        str(path.relative_to(fresh)) for path in rendered_files(fresh) if path.name != ".env"
    )
    updated = sorted(
        str(path.relative_to(project))
        for path in rendered_files(project)
        if path.name not in {".env", ".cruft.json"}
        and ".git" not in path.relative_to(project).parts
    )
    assert updated == names
    _, mismatch, errors = filecmp.cmpfiles(fresh, project, names, shallow=False)
    assert mismatch == errors == []

    python = find_python(combo.python_version)
    assert python, f"Python {combo.python_version} runs the updated project's tests"
    env = tool_env(python)
    run([tool("just"), "lint"], project, env)
    if combo.has_database:
        output = run(MIGRATE_ON_EMBEDDED_SERVER, project, env)
        assert "(head)" in output, output
    tests = [tool("just"), "test"]
    if turned_on:
        tests += ["-m", "not slow"]
    run(tests, project, env)
