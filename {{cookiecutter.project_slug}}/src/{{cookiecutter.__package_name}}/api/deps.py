"""FastAPI dependencies, each named once as an `Annotated` alias."""

from typing import Annotated

from fastapi import Depends, Request

from ..infrastructure.cache import Cache
from ..services.health import Check
from ..settings import Settings


def get_app_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_cache(request: Request) -> Cache:
    cache: Cache = request.app.state.cache
    return cache


def get_readiness_checks(request: Request) -> dict[str, Check]:
    checks: dict[str, Check] = request.app.state.readiness_checks
    return checks


SettingsDep = Annotated[Settings, Depends(get_app_settings)]
CacheDep = Annotated[Cache, Depends(get_cache)]
ReadinessChecksDep = Annotated[dict[str, Check], Depends(get_readiness_checks)]
