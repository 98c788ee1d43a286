"""The application factory: `uvicorn {{ cookiecutter.__package_name }}.main:create_app --factory`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
{%- if cookiecutter.cache_backend != "none" %}
from functools import partial
{%- endif %}

from fastapi import FastAPI

from . import __version__
from .api.router import api_router
from .infrastructure.cache import Cache
{%- if cookiecutter.cache_backend != "none" %}
from .infrastructure.redis import create_redis, ping
{%- endif %}
from .settings import Settings, get_settings


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open shared clients once at start-up and close them at shutdown."""
    settings: Settings = app.state.settings
{%- if cookiecutter.cache_backend != "none" %}
    redis = create_redis(settings)
    app.state.cache = Cache(
        redis, prefix=settings.cache_key_prefix, default_ttl_s=settings.cache_default_ttl_s
    )
    app.state.readiness_checks = {"redis": partial(ping, redis)}
    try:
        yield
    finally:
        await redis.aclose()
{%- else %}
    app.state.cache = Cache(
        default_ttl_s=settings.cache_default_ttl_s, max_entries=settings.cache_max_entries
    )
    app.state.readiness_checks = {}
    yield
{%- endif %}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; tests pass their own settings."""
    settings = settings or get_settings()
    app = FastAPI(
        title=settings.app_name,
        description="{{ cookiecutter.description }}",
        version=__version__,
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.include_router(api_router)
    return app
