"""Every operation of the rendered OpenAPI schema, fed odd ids, odd query values and arbitrary
bodies by Hypothesis: with an operator's key, the service answers 2xx or a 4xx with a `detail`,
never a 5xx, and a refused request changes nothing in Redis; without a key, every operation
that does work answers 401, 403 or 404 and changes nothing.
{%- if cookiecutter.__database == "postgres" %}
With PostgreSQL out of reach, what needs it answers 503 with Retry-After and says so, and the
rest answers as before.
{%- endif %}"""

import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
{%- if cookiecutter.__database == "postgres" %}
from pydantic import SecretStr
{%- endif %}
from redis import Redis

from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import TEST_KEY, bearer{% if cookiecutter.__database == "postgres" %}, free_port{% endif %}

JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
# Bodies shaped like a submission often enough to get past the first checks.
SUBMISSIONS = st.fixed_dictionaries(
    {},
    optional={
        "name": st.sampled_from(["example_task", "nope", ""]) | st.text(max_size=40),
        "args": JSON_VALUES
        | st.fixed_dictionaries(
            {}, optional={"message": JSON_VALUES, "steps": JSON_VALUES, "delay_s": JSON_VALUES}
        ),
        "defer_by": JSON_VALUES,
        "task_id": JSON_VALUES | st.text(max_size=200),
        "extra": JSON_VALUES,
    },
)
{% if cookiecutter.__database == "postgres" -%}
# Sign-ups valid often enough to reach the database.
SIGN_UPS = st.fixed_dictionaries(
    {
        "email": st.just("ada@example.com") | st.emails(),
        "name": st.just("Ada Lovelace") | st.text(min_size=1, max_size=30),
    }
)
{% endif -%}
IDS = st.text(min_size=1, max_size=300)
# Streams stay open until their task finishes, and no worker runs here: followed elsewhere.
STREAMS = {"/api/v1/tasks/{task_id}/events"}
OPEN_PATHS = {"/health/live", "/health/ready", "/metrics"}
# 405: an id of "/" makes a path that only other methods have.
REFUSED = {401, 403, 404, 405}


@pytest.fixture(params=["operator", "no key"{% if cookiecutter.__database == "postgres" %}, "operator, database down"{% endif %}])
def case(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
{%- if cookiecutter.__database == "postgres" %}
def app(settings: Settings, redis_url: str, tmp_path: Path, case: str) -> FastAPI:
    """The service; with its database down, on an address where nothing listens (as a
    stopped PostgreSQL leaves it)."""
    with Redis.from_url(redis_url) as redis:
        redis.flushall()
    update: dict[str, Any] = {% if cookiecutter.__examples == "yes" %}{"media_dir": tmp_path / "media"}{% else %}{}{% endif %}
    if case.endswith("database down"):
        nowhere = f"postgresql+asyncpg://postgres@127.0.0.1:{free_port()}/orders"
        update["database_url"] = SecretStr(nowhere)
    return create_app(settings.model_copy(update=update))
{%- else %}
def app(settings: Settings, redis_url: str, tmp_path: Path) -> FastAPI:
    with Redis.from_url(redis_url) as redis:
        redis.flushall()
{%- if cookiecutter.__examples == "yes" %}
    return create_app(settings.model_copy(update={"media_dir": tmp_path / "media"}))
{%- else %}
    return create_app(settings)
{%- endif %}
{%- endif %}


@pytest.fixture
def api(app: FastAPI, case: str) -> Iterator[httpx.Client]:
    """The app under uvicorn, in a thread, on a free port of 127.0.0.1; a client with an
    operator's key, or with none."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]})
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        assert thread.is_alive(), "the API did not start"
        assert time.monotonic() < deadline, "the API did not start in time"
        time.sleep(0.01)
    host, port = sock.getsockname()
    headers = bearer(TEST_KEY) if case.startswith("operator") else {}
    base_url = f"http://{host}:{port}"
    # A redirect (a trailing slash) is no answer: the test judges where it leads.
    with httpx.Client(
        base_url=base_url, timeout=10, headers=headers, follow_redirects=True
    ) as client:
        yield client
    server.should_exit = True
    thread.join()
    sock.close()


@pytest.fixture
def keys(redis_url: str, settings: Settings) -> Iterator[Any]:
    """Counts the keys of the cache and the queue databases."""
    clients = [
        Redis.from_url(redis_url, db=db)
        for db in (settings.redis_cache_db, settings.redis_queue_db)
    ]
    yield lambda: [client.dbsize() for client in clients]
    for client in clients:
        client.close()


def operations(app: FastAPI, *, with_key: bool) -> list[tuple[str, str, dict[str, Any]]]:
    """With a key, every operation but the streams; without, those that need a key."""
    return [
        (method.upper(), path, operation)
        for path, item in app.openapi()["paths"].items()
        for method, operation in item.items()
        if path not in (STREAMS if with_key else OPEN_PATHS)
    ]


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_no_operation_answers_5xx(
    app: FastAPI, api: httpx.Client, keys: Any, {% if cookiecutter.__database == "postgres" %}case: str, {% endif %}data: st.DataObject
) -> None:
    with_key = "Authorization" in api.headers
{%- if cookiecutter.__database == "postgres" %}
    database_down = case.endswith("database down")
{%- endif %}
    for method, path, operation in operations(app, with_key=with_key):
        url = path
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                value = quote(data.draw(IDS, label=parameter["name"]), safe="")
                url = url.replace("{" + parameter["name"] + "}", value)
        query = {
            parameter["name"]: data.draw(st.text(max_size=20) | st.integers().map(str))
            for parameter in operation.get("parameters", [])
            if parameter["in"] == "query"
        }
        content = operation.get("requestBody", {}).get("content", {})
        request: dict[str, Any] = {"params": query}
        if "multipart/form-data" in content:
            request["files"] = {"file": ("upload", data.draw(st.binary(max_size=2_000)))}
        elif content:
            body = data.draw(SUBMISSIONS{% if cookiecutter.__database == "postgres" %} | SIGN_UPS{% endif %} | JSON_VALUES, label="body")
            request["content"] = json.dumps(body)
            request["headers"] = {"Content-Type": "application/json"}
        before = keys()
        reply = api.request(method, url, **request)
        if not with_key:
            assert reply.status_code in REFUSED, (method, url, request, reply.text)
{%- if cookiecutter.__database == "postgres" %}
        if reply.status_code == 503 and database_down:
            # What needs PostgreSQL says so, and when to come back; nothing else fails.
            assert "Retry-After" in reply.headers, (method, url, reply.text)
            assert "database" in reply.text.lower(), (method, url, reply.text)
            continue
{%- endif %}
        assert reply.status_code < 500, (method, url, request, reply.text)
        if reply.status_code >= 400:
            assert reply.json()["detail"], (method, url, reply.text)
            assert keys() == before, (method, url, request, reply.text)
