"""Alembic's environment: runs the migrations on an async engine (asyncpg), as the service
connects. Alembic loads this file itself; `migrate.py` is how it is called."""

import asyncio

from alembic import context
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from {{ cookiecutter.__package_name }}.infrastructure import models  # noqa: F401 - its tables
from {{ cookiecutter.__package_name }}.infrastructure.database import Base
from {{ cookiecutter.__package_name }}.settings import Settings

config = context.config


def database_url() -> str:
    given: str | None = config.attributes.get("database_url")
    if given:
        return Settings(database_url=given).database_url.get_secret_value()
    return Settings().database_url.get_secret_value()


def run_on(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=Base.metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_online() -> None:
    engine = create_async_engine(database_url(), poolclass=NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(run_on)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    # `--sql`: print the SQL instead of running it.
    context.configure(url=database_url(), target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(run_online())
