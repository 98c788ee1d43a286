"""Every router of the service, assembled in one place."""

from fastapi import APIRouter

from . import {% if cookiecutter.cache_backend != "none" %}console, events, {% endif %}health{% if cookiecutter.__examples == "yes" %}, media{% endif %}{% if cookiecutter.cache_backend != "none" %}, metrics, tasks{% endif %}{% if cookiecutter.__database == "postgres" %}, users{% endif %}

api_router = APIRouter()
api_router.include_router(health.router)
{%- if cookiecutter.cache_backend != "none" %}
api_router.include_router(tasks.router)
api_router.include_router(events.router)
api_router.include_router(metrics.router)
api_router.include_router(console.router)
{%- if cookiecutter.__examples == "yes" %}
api_router.include_router(media.router)
{%- endif %}
{%- if cookiecutter.__database == "postgres" %}
api_router.include_router(users.router)
{%- endif %}
{%- endif %}
