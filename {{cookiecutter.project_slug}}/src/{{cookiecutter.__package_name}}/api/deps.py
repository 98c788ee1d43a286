"""FastAPI dependencies, each named once as an `Annotated` alias.

They are `async def` though they only read `app.state`: FastAPI runs a plain `def` dependency
in its thread pool, a hop that costs more than the work.
"""

{% if cookiecutter.cache_backend != "none" -%}
import secrets
{% endif -%}
{% if cookiecutter.__database == "postgres" -%}
from collections.abc import AsyncIterator
{% endif -%}
from typing import Annotated

from fastapi import Depends{% if cookiecutter.cache_backend != "none" %}, HTTPException, status{% endif %}
from fastapi.requests import HTTPConnection
{%- if cookiecutter.cache_backend != "none" %}
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import SecretStr
{%- endif %}
{%- if cookiecutter.__database == "postgres" %}
from sqlalchemy.ext.asyncio import AsyncSession
{%- endif %}

from ..infrastructure.cache import Cache
{%- if cookiecutter.__database == "postgres" %}
from ..infrastructure.database import DatabaseUnavailableError, Sessions, unreachable
{%- endif %}
{%- if cookiecutter.cache_backend != "none" %}
from ..infrastructure.events import TaskEventHub
from ..infrastructure.queue import TaskQueue
{%- endif %}
from ..services.health import Check, WorkerProbe
{%- if cookiecutter.cache_backend != "none" %}
from ..services.tasks import TaskService
{%- endif %}
from ..settings import Settings
{%- if cookiecutter.cache_backend != "none" %}
from .auth import Access
{%- endif %}


async def get_app_settings(connection: HTTPConnection) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


async def get_cache(connection: HTTPConnection) -> Cache:
    cache: Cache = connection.app.state.cache
    return cache


{%- if cookiecutter.cache_backend != "none" %}


async def get_task_queue(connection: HTTPConnection) -> TaskQueue:
    queue: TaskQueue = connection.app.state.task_queue
    return queue


async def get_task_service(connection: HTTPConnection) -> TaskService:
    state = connection.app.state
    queue: TaskQueue = state.task_queue
    events: TaskEventHub = state.task_events
    settings: Settings = state.settings
    access: Access = state.access
    return TaskService(queue, events, settings, access.follow_tokens)


metrics_bearer = HTTPBearer(
    auto_error=False, scheme_name="MetricsToken", description="METRICS_TOKEN, when one is set"
)
Credentials = HTTPAuthorizationCredentials | None


def check_bearer(token: SecretStr | None, credentials: Credentials, name: str) -> None:
    """Pass when `token` is unset or the request bears it; 401 with WWW-Authenticate else."""
    if token is None:
        return
    given = credentials.credentials.encode() if credentials else b""
    if not secrets.compare_digest(given, token.get_secret_value().encode()):
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED,
            f"This endpoint needs {name}: Authorization: Bearer <{name}>.",
            headers={"WWW-Authenticate": "Bearer"},
        )


async def require_metrics_token(
    connection: HTTPConnection, credentials: Annotated[Credentials, Depends(metrics_bearer)]
) -> None:
    """With METRICS_TOKEN set, only a request bearing it passes; 401 otherwise."""
    settings: Settings = connection.app.state.settings
    check_bearer(settings.metrics_token, credentials, "METRICS_TOKEN")
{%- endif %}
{%- if cookiecutter.__database == "postgres" %}


async def get_db_session(connection: HTTPConnection) -> AsyncIterator[AsyncSession]:
    """A database session for one request, closed after the response; the route commits what
    it means to keep (`async with session.begin():`)."""
    sessions: Sessions = connection.app.state.db_sessions
    async with sessions() as session:
        try:
            yield session
        except Exception as exc:
            if unreachable(exc):  # the route answers 503 (api/errors.py), never a 500
                raise DatabaseUnavailableError(str(exc) or type(exc).__name__) from exc
            raise
{%- endif %}


async def get_readiness_checks(connection: HTTPConnection) -> dict[str, Check]:
    checks: dict[str, Check] = connection.app.state.readiness_checks
    return checks


async def get_worker_probes(connection: HTTPConnection) -> dict[str, WorkerProbe]:
    probes: dict[str, WorkerProbe] = connection.app.state.worker_probes
    return probes


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CacheDep = Annotated[Cache, Depends(get_cache)]
ReadinessChecksDep = Annotated[dict[str, Check], Depends(get_readiness_checks)]
WorkerProbesDep = Annotated[dict[str, WorkerProbe], Depends(get_worker_probes)]
{%- if cookiecutter.cache_backend != "none" %}
TaskQueueDep = Annotated[TaskQueue, Depends(get_task_queue)]
TaskServiceDep = Annotated[TaskService, Depends(get_task_service)]
MetricsTokenDep = Depends(require_metrics_token)
{%- endif %}
{%- if cookiecutter.__database == "postgres" %}
DbSessionDep = Annotated[AsyncSession, Depends(get_db_session)]
{%- endif %}
