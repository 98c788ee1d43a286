"""The application factory, for uvicorn:
`uvicorn --factory {{ cookiecutter.__package_name }}.main:create_app`."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
{%- if cookiecutter.cache_backend != "none" %}
from functools import partial
{%- endif %}

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from . import __summary__, __version__
{%- if cookiecutter.cache_backend != "none" %}
from .api.auth import Access, check_access_settings
from .api.errors import EXCEPTION_HANDLERS
{%- endif %}
from .api.limits import BodySizeLimit
from .api.request_id import RequestId
from .api.router import api_router
from .infrastructure.cache import Cache
{%- if cookiecutter.__database == "postgres" %}
from .infrastructure.database import create_engine, session_factory
from .infrastructure.database import ping as ping_database
{%- endif %}
{%- if cookiecutter.cache_backend != "none" %}
from .infrastructure.events import TaskEventHub
from .infrastructure.queue import open_task_queue
from .infrastructure.redis import close_redis, create_redis, ping
{%- endif %}
from .logs import configure_logging
from .settings import Settings, get_settings
from .tracing import configure_tracing
{%- if cookiecutter.__examples == "yes" %}

MULTIPART_MARGIN_BYTES = 16_384
{%- endif %}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Open shared clients once at start-up and close them at shutdown."""
    settings: Settings = app.state.settings
{%- if cookiecutter.cache_backend != "none" %}
    redis = create_redis(settings)
    app.state.cache = Cache(
        redis, prefix=settings.cache_key_prefix, default_ttl_s=settings.cache_default_ttl_s
    )
    task_queue = open_task_queue(settings)
    app.state.task_queue = task_queue
    app.state.task_events = task_events = TaskEventHub(task_queue.pool)
{%- if cookiecutter.__database == "postgres" %}
    engine = create_engine(settings)
    app.state.db_sessions = session_factory(engine)
    app.state.readiness_checks = {
        "redis": partial(ping, redis),
        "database": partial(ping_database, engine),
    }
{%- else %}
    app.state.readiness_checks = {"redis": partial(ping, redis)}
{%- endif %}
    app.state.worker_probes = {
        queue: partial(task_queue.worker_alive, queue) for queue in task_queue.queues
    }
    try:
        yield
    finally:
{%- if cookiecutter.__database == "postgres" %}
        await engine.dispose()
{%- endif %}
        await task_events.close()
        await task_queue.close()
        await close_redis(redis)
{%- else %}
    app.state.cache = Cache(
        default_ttl_s=settings.cache_default_ttl_s, max_entries=settings.cache_max_entries
    )
    app.state.readiness_checks = {}
    app.state.worker_probes = {}
    yield
{%- endif %}


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; tests pass their own settings."""
    settings = settings or get_settings()
    configure_logging(settings)
    # FastAPI makes the spans of each request once a tracer provider is set.
    configure_tracing("{{ cookiecutter.project_slug }}")
{%- if cookiecutter.cache_backend != "none" %}
    check_access_settings(settings)
{%- endif %}
    app = FastAPI(
        title=settings.app_name,
        description=__summary__,
        version=__version__,
        lifespan=lifespan,
{%- if cookiecutter.cache_backend != "none" %}
        exception_handlers=EXCEPTION_HANDLERS,
{%- endif %}
    )
    app.state.settings = settings
{%- if cookiecutter.cache_backend != "none" %}
    app.state.access = Access(settings)
{%- endif %}
{%- if cookiecutter.__examples == "yes" %}
    # Uploads may be larger than other bodies: the file, plus room for the multipart framing.
    upload_bytes = settings.media_max_upload_bytes + MULTIPART_MARGIN_BYTES
    app.add_middleware(
        BodySizeLimit,
        max_bytes=settings.api_max_body_bytes,
        max_bytes_by_path={"/api/v1/media": upload_bytes},
    )
{%- else %}
    app.add_middleware(BodySizeLimit, max_bytes=settings.api_max_body_bytes)
{%- endif %}
    if settings.cors_allow_origins:
        # Clients authenticate with a header, not cookies: no credentials mode.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_allow_origins,
            allow_methods=["GET", "POST", "DELETE"],
            allow_headers=["Authorization", "Content-Type"],
            expose_headers=["Location", "Retry-After", "X-Request-ID"],
            max_age=600,
        )
    # Outermost: every answer carries the request's id, and every log line of the request.
    app.add_middleware(RequestId)
    app.include_router(api_router)
    return app
