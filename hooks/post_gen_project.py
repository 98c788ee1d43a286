"""Remove what the chosen options turn off, and write the local `.env` with fresh secrets.

Runs inside the rendered project. Importable: the template's tests call `plan()` and `apply()`.
"""

from __future__ import annotations

import hashlib
import json
import secrets
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

Answers = dict[str, str]


@dataclass(frozen=True)
class Rule:
    """When `applies` holds for the answers, the `paths` (relative, `{pkg}` = package) go."""

    reason: str
    applies: Callable[[Answers], bool]
    paths: tuple[str, ...]


RULES: tuple[Rule, ...] = (
    Rule(
        "cache_backend=none: no Redis, no embedded server, no task layer",
        lambda answers: answers["cache_backend"] == "none",
        (
            "deploy",
            "docs/benchmarks.md",
            "docs/console.md",
            "docs/deployment.md",
            "docs/images",
            "src/{pkg}/access.py",
            "src/{pkg}/api/auth.py",
            "src/{pkg}/api/console.py",
            "src/{pkg}/api/console_pages.py",
            "src/{pkg}/api/console_session.py",
            "src/{pkg}/api/errors.py",
            "src/{pkg}/api/events.py",
            "src/{pkg}/api/metrics.py",
            "src/{pkg}/api/tasks.py",
            "src/{pkg}/console",
            "src/{pkg}/devtools",
            "src/{pkg}/infrastructure/cache.py",
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
            "src/{pkg}/tasks",
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
        ),
    ),
    Rule(
        "example_tasks=no, or no task layer: no worked examples",
        lambda answers: answers["example_tasks"] == "no" or answers["cache_backend"] == "none",
        (
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
        ),
    ),
    Rule(
        "cache_backend is redis or falkordb: the cache lives in the server",
        lambda answers: answers["cache_backend"] != "none",
        ("src/{pkg}/infrastructure/cache_in_process.py",),
    ),
    Rule(
        "cache_backend is not falkordb: no graph",
        lambda answers: answers["cache_backend"] != "falkordb",
        (
            "src/{pkg}/infrastructure/graph.py",
            "tests/test_graph.py",
            "docs/cache-graph.md",
        ),
    ),
    Rule(
        "database=none, or no task layer: no SQL database",
        lambda answers: answers["database"] != "postgres" or answers["cache_backend"] == "none",
        (
            "deploy/k8s/migrate-job.yaml",
            "docs/database.md",
            "src/{pkg}/api/users.py",
            "src/{pkg}/devtools/embedded_postgres.py",
            "src/{pkg}/infrastructure/database.py",
            "src/{pkg}/infrastructure/models.py",
            "src/{pkg}/infrastructure/outbox.py",
            "src/{pkg}/infrastructure/outbox_relay.py",
            "src/{pkg}/infrastructure/sessions_sql.py",
            "src/{pkg}/migrate.py",
            "src/{pkg}/migrations",
            "src/{pkg}/services/users.py",
            "tests/test_database.py",
            "tests/test_outbox.py",
            "tests/test_sessions_sql.py",
            "tests/test_users.py",
        ),
    ),
    Rule(
        "ci=none: no workflow",
        lambda answers: answers["ci"] == "none",
        (".github",),
    ),
)
# Files that stand in for another under its name: (source, destination), when the rule applies.
RENAMES: tuple[tuple[Callable[[Answers], bool], str, str], ...] = (
    (
        lambda answers: answers["cache_backend"] == "none",
        "src/{pkg}/infrastructure/cache_in_process.py",
        "src/{pkg}/infrastructure/cache.py",
    ),
    (
        lambda answers: answers["database"] == "postgres" and answers["cache_backend"] != "none",
        "src/{pkg}/infrastructure/sessions_sql.py",
        "src/{pkg}/infrastructure/sessions.py",
    ),
    (
        lambda answers: answers["database"] == "postgres" and answers["cache_backend"] != "none",
        "tests/test_sessions_sql.py",
        "tests/test_sessions.py",
    ),
)
SECRET_KEYS = ("REDIS_PASSWORD", "FOLLOW_TOKEN_SECRET", "METRICS_TOKEN", "POSTGRES_PASSWORD")
# The development key has every scope; its entry has the form the service's keys command prints.
DEV_KEY_SCOPES = ("operator", "tasks:cancel", "tasks:read", "tasks:submit")
ENV_HEADER = "# Local settings from .env.example, with fresh secrets. Git-ignored: keep it local."


def plan(answers: Answers) -> tuple[list[str], list[tuple[str, str]]]:
    """The paths to remove and the renames to make for these answers."""
    package = answers["project_slug"].replace("-", "_")
    removals = [
        path.format(pkg=package) for rule in RULES if rule.applies(answers) for path in rule.paths
    ]
    renames = [
        (source.format(pkg=package), target.format(pkg=package))
        for applies, source, target in RENAMES
        if applies(answers)
    ]
    return removals, renames


def apply(project: Path, answers: Answers) -> None:
    """Remove, rename, then drop empty folders and bytecode, and write `.env`."""
    removals, renames = plan(answers)
    for relative in removals:
        path = project / relative
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for source, target in renames:
        (project / source).replace(project / target)
    for cache in list(project.rglob("__pycache__")):
        shutil.rmtree(cache)
    for folder in sorted((p for p in project.rglob("*") if p.is_dir()), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()
    write_env(project)


def write_env(project: Path) -> None:
    """`.env` from `.env.example`, each secret replaced by a new random one, and a development
    API key with every scope (git-ignored).

    The example's opening comment ("copy to .env") gives way to one saying where `.env` came from.
    """
    example = project / ".env.example"
    dev_key = "key_" + secrets.token_urlsafe(32)
    digest = hashlib.sha256(dev_key.encode()).hexdigest()
    generated = {"API_KEYS": f"dev:{'+'.join(DEV_KEY_SCOPES)}:{digest}", "DEV_API_KEY": dev_key}
    lines = [ENV_HEADER]
    for number, line in enumerate(example.read_text().splitlines()):
        if number == 0 and line.startswith("#"):
            continue
        key = line.split("=", 1)[0]
        if key in SECRET_KEYS:
            line = f"{key}={secrets.token_urlsafe(32)}"
        elif key in generated:
            line = f"{key}={generated[key]}"
        lines.append(line)
    (project / ".env").write_text("\n".join(lines) + "\n")


def next_steps(project: Path, answers: Answers) -> str:
    """What the render ends with: where the project is, what to run next, and what `.env` is."""
    if answers["cache_backend"] == "none":
        started = "the API with reload"
    elif answers["database"] == "postgres":
        started = "the API, its workers and embedded Redis and PostgreSQL servers"
    else:
        started = "the API, its workers and an embedded Redis server"
    commands = {
        f"cd {project.name} && just dev": started,
        "just test": "its tests; `just` lists every recipe",
    }
    width = max(map(len, commands)) + 4  # the comments line up, whatever the project's name
    steps = "".join(f"  {command:<{width}}# {what}\n" for command, what in commands.items())
    secrets = "fresh local secrets and a development API key: it is git-ignored, keep it so"
    return f"{answers['project_name']} is ready in {project}\n{steps}.env holds {secrets}.\n"


def main() -> int:
    answers = json.loads(r"""{{ cookiecutter | jsonify }}""")
    project = Path.cwd()
    apply(project, answers)
    print(next_steps(project, answers), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
