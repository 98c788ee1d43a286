"""FastAPI dependencies, each named once as an `Annotated` alias."""

from typing import Annotated

from fastapi import Depends
from fastapi.requests import HTTPConnection

from ..infrastructure.cache import Cache
{%- if cookiecutter.cache_backend != "none" %}
from ..infrastructure.events import TaskEventHub
from ..infrastructure.queue import TaskQueue
{%- endif %}
from ..services.health import Check, WorkerProbe
{%- if cookiecutter.cache_backend != "none" %}
from ..services.tasks import TaskService
{%- endif %}
from ..settings import Settings


def get_app_settings(connection: HTTPConnection) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


def get_cache(connection: HTTPConnection) -> Cache:
    cache: Cache = connection.app.state.cache
    return cache


{%- if cookiecutter.cache_backend != "none" %}


def get_task_queue(connection: HTTPConnection) -> TaskQueue:
    queue: TaskQueue = connection.app.state.task_queue
    return queue


def get_task_service(connection: HTTPConnection) -> TaskService:
    events: TaskEventHub = connection.app.state.task_events
    return TaskService(get_task_queue(connection), events, get_app_settings(connection))
{%- endif %}


def get_readiness_checks(connection: HTTPConnection) -> dict[str, Check]:
    checks: dict[str, Check] = connection.app.state.readiness_checks
    return checks


def get_worker_probes(connection: HTTPConnection) -> dict[str, WorkerProbe]:
    probes: dict[str, WorkerProbe] = connection.app.state.worker_probes
    return probes


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CacheDep = Annotated[Cache, Depends(get_cache)]
ReadinessChecksDep = Annotated[dict[str, Check], Depends(get_readiness_checks)]
WorkerProbesDep = Annotated[dict[str, WorkerProbe], Depends(get_worker_probes)]
{%- if cookiecutter.cache_backend != "none" %}
TaskQueueDep = Annotated[TaskQueue, Depends(get_task_queue)]
TaskServiceDep = Annotated[TaskService, Depends(get_task_service)]
{%- endif %}
