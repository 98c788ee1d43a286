"""The SQL database: the tables' base class, one engine per process, and sessions from it.

The API makes its engine in its lifespan, each worker in its `on_startup`; both close it at
shutdown. A session is one unit of work: `async with sessions() as session, session.begin():`.
"""

from asyncpg.exceptions import (
    OperatorInterventionError,
    PostgresConnectionError,
    TooManyConnectionsError,
)
from sqlalchemy import MetaData, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlalchemy.orm import DeclarativeBase

from ..settings import Settings

# Constraint names that migrations can refer to, the same on every database.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Sessions = async_sessionmaker[AsyncSession]
# What asyncpg raises while the database cannot be reached: a refused or timed-out connection
# (OSError, TimeoutError), a server starting, shutting down or restarting, a connection lost
# mid-query, no connection slot left.
UNREACHABLE_ERRORS = (
    OSError,
    OperatorInterventionError,
    PostgresConnectionError,
    TooManyConnectionsError,
)


class DatabaseUnavailableError(Exception):
    """The database did not answer: down, unreachable, shutting down, or out of connections."""


def unreachable(exc: BaseException) -> bool:
    """Whether `exc` says the database cannot be reached now, as opposed to a bad query."""
    if isinstance(exc, PoolTimeoutError):  # no free connection in the pool within its timeout
        return True
    if isinstance(exc, DBAPIError):
        cause = exc.orig.__cause__ if exc.orig is not None else None
        return exc.connection_invalidated or isinstance(cause or exc.orig, UNREACHABLE_ERRORS)
    return isinstance(exc, UNREACHABLE_ERRORS)


class Base(DeclarativeBase):
    """The base of every table; `models.py` holds them, the migrations follow them."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def create_engine(settings: Settings) -> AsyncEngine:
    """An engine with a bounded pool. Connections are checked before use (pre-ping), so one
    that the server closed (a restart, a failover) is replaced instead of failing a request."""
    return create_async_engine(
        settings.database_url.get_secret_value(),
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_pool_timeout_s,
        pool_pre_ping=True,
        connect_args={
            "timeout": settings.database_connect_timeout_s,
            "server_settings": {
                "application_name": settings.app_name[:63],
                "statement_timeout": str(round(settings.database_statement_timeout_s * 1000)),
            },
        },
    )


def session_factory(engine: AsyncEngine) -> Sessions:
    """Sessions whose objects stay readable after commit, as a response needs them."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Return when the database answers a query; raise otherwise (readiness)."""
    async with engine.connect() as connection:
        await connection.execute(text("SELECT 1"))
