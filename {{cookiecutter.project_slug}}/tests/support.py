"""Helpers the tests share."""

import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import httpx
import pytest
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


PROCESS_DEADLINE_S = 30.0


def free_port() -> int:
    """A port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def api_command(port: int) -> list[str]:
    """The API under uvicorn on 127.0.0.1:`port`, as deployed."""
    app = "{{ cookiecutter.__package_name }}.main:create_app"
    return [sys.executable, "-m", "uvicorn", "--factory", app, "--port", str(port)]


@contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[None]:
    """Run `command` in `log`'s folder with its output in `log`; SIGTERM it after, as a
    deployment stops it (which also lets it flush what it holds)."""
    with log.open("wb") as out:
        started = subprocess.Popen(command, env=env, cwd=log.parent, stdout=out, stderr=out)
    try:
        yield
    finally:
        started.send_signal(signal.SIGTERM)
        try:
            started.wait(timeout=PROCESS_DEADLINE_S)
        except subprocess.TimeoutExpired:
            started.kill()
            started.wait()


def wait_until_live(base: str, log: Path) -> None:
    """Until `base`/health/live answers 200; the process's log is the failure's message."""
    deadline = time.monotonic() + PROCESS_DEADLINE_S
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health/live").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    pytest.fail(log.read_text())
