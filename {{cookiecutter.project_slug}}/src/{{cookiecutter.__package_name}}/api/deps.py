"""FastAPI dependencies, each named once as an `Annotated` alias."""

from typing import Annotated

from fastapi import Depends, Request

from ..infrastructure.cache import Cache
{%- if cookiecutter.cache_backend != "none" %}
from ..infrastructure.queue import TaskQueue
{%- endif %}
from ..services.health import Check, WorkerProbe
{%- if cookiecutter.cache_backend != "none" %}
from ..services.tasks import TaskService
{%- endif %}
from ..settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_cache(request: Request) -> Cache:
    cache: Cache = request.app.state.cache
    return cache


{%- if cookiecutter.cache_backend != "none" %}


def get_task_queue(request: Request) -> TaskQueue:
    queue: TaskQueue = request.app.state.task_queue
    return queue


def get_task_service(request: Request) -> TaskService:
    return TaskService(get_task_queue(request), get_app_settings(request))
{%- endif %}


def get_readiness_checks(request: Request) -> dict[str, Check]:
    checks: dict[str, Check] = request.app.state.readiness_checks
    return checks


def get_worker_probes(request: Request) -> dict[str, WorkerProbe]:
    probes: dict[str, WorkerProbe] = request.app.state.worker_probes
    return probes


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CacheDep = Annotated[Cache, Depends(get_cache)]
ReadinessChecksDep = Annotated[dict[str, Check], Depends(get_readiness_checks)]
WorkerProbesDep = Annotated[dict[str, WorkerProbe], Depends(get_worker_probes)]
{%- if cookiecutter.cache_backend != "none" %}
TaskQueueDep = Annotated[TaskQueue, Depends(get_task_queue)]
TaskServiceDep = Annotated[TaskService, Depends(get_task_service)]
{%- endif %}
