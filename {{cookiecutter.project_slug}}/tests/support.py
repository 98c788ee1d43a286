"""Helpers the tests share."""

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import FastAPI
{%- if cookiecutter.cache_backend != "none" %}

from {{ cookiecutter.__package_name }}.access import create_key

EVERY_SCOPE = ["operator", "tasks:submit", "tasks:read", "tasks:cancel"]
# The settings fixture holds this key's entry: tests act as this operator unless they say not.
TEST_KEY, TEST_API_KEY = create_key("tests", EVERY_SCOPE)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
{%- endif %}


@asynccontextmanager
{%- if cookiecutter.cache_backend != "none" %}
async def serve(app: FastAPI, key: str | None = TEST_KEY) -> AsyncIterator[httpx.AsyncClient]:
    """A client on `app`, called in-process over ASGI, with the app's lifespan running; it
    sends `key` (None: no credential)."""
    transport = httpx.ASGITransport(app=app)
    headers = bearer(key) if key else {}
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=transport, base_url="http://testserver", headers=headers
        ) as client,
    ):
        yield client
{%- else %}
async def serve(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """A client on `app`, called in-process over ASGI, with the app's lifespan running."""
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://testserver") as client,
    ):
        yield client
{%- endif %}
