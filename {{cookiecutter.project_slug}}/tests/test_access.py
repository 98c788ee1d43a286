"""Access control: API keys and their scopes on every route that does work, task ownership,
the signed links that let a browser follow one task, and the settings that keep it on."""

import asyncio
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from {{ cookiecutter.__package_name }}.access import (
    ApiKey,
    FollowTokens,
    create_key,
    hash_key,
    parse_key_entry,
)
from {{ cookiecutter.__package_name }}.api.auth import AccessSettingsError
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import TEST_KEY, bearer, serve
from .test_events import serve_http

TASKS = "/api/v1/tasks"
SECRET = SecretStr("a-shared-secret-for-tests")
SUBMISSION = {"name": "example_task", "args": {"message": "mine"}}
# Open to all: the probes; /metrics has its own token (METRICS_TOKEN).
OPEN_PATHS = {"/health/live", "/health/ready", "/metrics"}


def keys(*specs: tuple[str, list[str]]) -> tuple[list[str], list[ApiKey]]:
    made = [create_key(name, scopes) for name, scopes in specs]
    return [key for key, _ in made], [entry for _, entry in made]


@asynccontextmanager
async def app_with(settings: Settings, *entries: ApiKey) -> AsyncIterator[FastAPI]:
    app = create_app(settings.model_copy(update={"api_keys": [*settings.api_keys, *entries]}))
    async with app.router.lifespan_context(app):
        yield app


def client_of(app: FastAPI, key: str | None) -> httpx.AsyncClient:
    headers = bearer(key) if key else {}
    transport = httpx.ASGITransport(app=app)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver", headers=headers)


def protected_operations(app: FastAPI) -> list[tuple[str, str]]:
    return [
        (method.upper(), path.replace("{task_id}", "some-task"))
        for path, item in app.openapi()["paths"].items()
        for method in item
        if path not in OPEN_PATHS
    ]


@pytest.mark.slow
def test_the_keys_command_prints_the_key_then_its_entry() -> None:
    keys_module = "{{ cookiecutter.__package_name }}.keys"
    command = [sys.executable, "-m", keys_module, "create", "mobile"]
    made = subprocess.run(
        [*command, "--scope", "tasks:submit", "--scope", "tasks:read"],
        capture_output=True,
        text=True,
        check=True,
    )
    key, entry = made.stdout.splitlines()
    parsed = parse_key_entry(entry)
    assert (parsed.name, set(parsed.scopes)) == ("mobile", {"tasks:submit", "tasks:read"})
    assert parsed.sha256 == hash_key(key)
    assert key not in entry  # only the hash is kept
    assert len(key) >= 40
    for scopes, error in (
        (["--scope", "tasks:everything"], "is not a scope"),
        (["--scope", "tasks:submit:no_such_task"], "no API task named 'no_such_task'"),
        ([], "--scope"),
    ):
        refused = subprocess.run([*command, *scopes], capture_output=True, text=True, check=False)
        assert refused.returncode == 2
        assert error in refused.stderr
        assert refused.stdout == ""


@pytest.mark.parametrize(
    ("value", "error"),
    [
        ("no-colons", "is not NAME:SCOPE+SCOPE:SHA256"),
        (f"a:tasks:read:{'0' * 63}", "is not NAME:SCOPE+SCOPE:SHA256"),
        (f"a:tasks:write:{'0' * 64}", "'tasks:write' is not a scope"),
        (f"a:tasks:read:{'0' * 64},a:operator:{'1' * 64}", "the same name"),
        (f"a:tasks:read:{'0' * 64},b:operator:{'0' * 64}", "the same key"),
    ],
)
def test_bad_api_keys_entries_are_refused_at_start_up(value: str, error: str) -> None:
    with pytest.raises(ValueError, match=re.escape(error)):
        Settings(api_keys=value, _env_file=None)


async def test_every_route_that_does_work_needs_a_key(settings: Settings) -> None:
    """No key, an unknown key, or one sent without the Bearer scheme: 401 with
    WWW-Authenticate: Bearer, and nothing done."""
    async with app_with(settings) as app:
        operations = protected_operations(app)
        assert len(operations) >= 6
        for headers in ({}, bearer("key_unknown"), {"Authorization": TEST_KEY}):
            async with client_of(app, None) as client:
                for method, path in operations:
                    body = SUBMISSION if method == "POST" and path == TASKS else None
                    reply = await client.request(method, path, json=body, headers=headers)
                    assert reply.status_code == 401, (method, path, headers, reply.text)
                    assert reply.headers["WWW-Authenticate"] == "Bearer"
        async with client_of(app, TEST_KEY) as client:
            assert (await client.get(f"{TASKS}?status=failed")).json() == []


async def test_each_route_needs_its_scope(settings: Settings) -> None:
    (reader, submitter, canceller), entries = keys(
        ("reader", ["tasks:read"]), ("submitter", ["tasks:submit"]), ("canceller", ["tasks:cancel"])
    )
    async with app_with(settings, *entries) as app:
        async with client_of(app, submitter) as client:
            accepted = await client.post(TASKS, json=SUBMISSION)
            assert accepted.status_code == 202
            status_url = accepted.json()["status_url"]
            for method, path in (("GET", status_url), ("DELETE", status_url)):
                assert (await client.request(method, path)).status_code == 403
        async with client_of(app, reader) as client:
            assert (await client.get(status_url)).status_code == 404  # not its task
            refused = await client.post(TASKS, json=SUBMISSION)
            assert refused.status_code == 403
            assert refused.json()["detail"] == "This needs the scope tasks:submit."
            assert (await client.delete(status_url)).status_code == 403
            assert (await client.get(f"{TASKS}?status=failed")).status_code == 403
        async with client_of(app, canceller) as client:
            assert (await client.get(status_url)).status_code == 403
            assert (await client.delete(status_url)).status_code == 404  # not its task
        async with client_of(app, TEST_KEY) as client:  # an operator sees every task
            assert (await client.get(status_url)).json()["status"] == "queued"


async def test_another_principal_s_task_is_answered_as_an_unknown_one(
    settings: Settings,
) -> None:
    """Same chosen id, two principals: two tasks. Neither can read, cancel or follow the
    other's; the answers are those for an id that does not exist."""
    every = ["tasks:submit", "tasks:read", "tasks:cancel"]
    (alice, bob), entries = keys(("alice", every), ("bob", every))
    body = {**SUBMISSION, "task_id": "invoice-7"}
    async with app_with(settings, *entries) as app:
        async with client_of(app, alice) as client:
            alices = (await client.post(TASKS, json=body)).json()
        async with client_of(app, bob) as client:
            bobs = await client.post(TASKS, json=body)  # neither blocked nor revealing
            assert bobs.status_code == 202
            assert bobs.json()["task_id"] != alices["task_id"]
            assert bobs.json()["task_id"].endswith(".invoice-7")
            unknown_id = alices["task_id"].replace("invoice-7", "invoice-8")
            for task_id in (alices["task_id"], unknown_id):
                for method, path in (
                    ("GET", f"{TASKS}/{task_id}"),
                    ("DELETE", f"{TASKS}/{task_id}"),
                    ("GET", f"{TASKS}/{task_id}/events"),
                ):
                    reply = await client.request(method, path)
                    assert reply.status_code == 404
                    assert reply.json() == {"detail": f"No task with id {task_id!r}."}
        async with client_of(app, alice) as client:
            assert (await client.get(alices["status_url"])).json()["status"] == "queued"


async def test_the_websocket_refuses_as_http_does(settings: Settings) -> None:
    (alice, bob, submitter), entries = keys(
        ("alice", ["tasks:submit", "tasks:read"]),
        ("bob", ["tasks:read"]),
        ("submitter", ["tasks:submit"]),
    )
    settings = settings.model_copy(update={"api_keys": [*settings.api_keys, *entries]})
    async with serve_http(settings) as address, asyncio.timeout(30):
        async with httpx.AsyncClient(headers=bearer(alice)) as client:
            accepted = await client.post(f"http://{address}{TASKS}", json=SUBMISSION)
        task_id = accepted.json()["task_id"]
        url = f"ws://{address}{TASKS}/{task_id}/ws"
        for headers, code in (({}, 4401), (bearer(bob), 4404), (bearer(submitter), 4403)):
            assert await first_close(url, headers) == (None, code)
        first, _ = await first_close(url, bearer(alice))
        assert first is not None
        assert (first["task_id"], first["status"]) == (task_id, "queued")


async def first_close(url: str, headers: dict[str, str]) -> tuple[dict[str, Any] | None, int]:
    """The first message (None if the socket closed first) and the close code, closing it
    after one message."""
    async with connect(url, additional_headers=headers) as websocket:
        try:
            message: dict[str, Any] = json.loads(await websocket.recv())
        except ConnectionClosed:
            assert websocket.close_code is not None
            return None, websocket.close_code
        return message, 1000


@pytest.mark.parametrize(
    "token", ["", ".", "not-a-token", "\u00b9.mac", "4102444800.\u00e9", "4102444800.forged"]
)
def test_a_malformed_follow_token_allows_nothing(token: str) -> None:
    """Found by the fuzz run: a superscript digit passed isdigit() and broke int() (500)."""
    tokens = FollowTokens(SECRET.get_secret_value().encode(), 60)
    assert not tokens.allows(token, "task")
    assert tokens.allows(tokens.sign("task"), "task")


async def test_the_links_of_a_202_follow_that_task_only(settings: Settings) -> None:
    """events_url and ws_url carry a token: followed without any header, they give the task's
    events; the token opens no other task and expires."""
    settings = settings.model_copy(update={"follow_token_secret": SECRET})
    async with serve_http(settings) as address, asyncio.timeout(30):
        base = f"http://{address}"
        async with httpx.AsyncClient(headers=bearer(TEST_KEY)) as client:
            mine = (await client.post(f"{base}{TASKS}", json=SUBMISSION)).json()
            other = (await client.post(f"{base}{TASKS}", json=SUBMISSION)).json()
        async with httpx.AsyncClient(base_url=base) as browser:  # no credential of its own
            async with browser.stream("GET", mine["events_url"]) as stream:
                assert stream.status_code == 200
                async for line in stream.aiter_lines():
                    if line.startswith("data: "):
                        assert json.loads(line.removeprefix("data: "))["status"] == "queued"
                        break
            token = mine["events_url"].partition("?token=")[2]
            expired = FollowTokens(SECRET.get_secret_value().encode(), -1).sign(mine["task_id"])
            for url in (
                f"{TASKS}/{other['task_id']}/events?token={token}",
                f"{TASKS}/{mine['task_id']}/events?token={expired}",
                f"{TASKS}/{mine['task_id']}/events?token=not-a-token",
            ):
                reply = await browser.get(url)
                assert reply.status_code == 401, url
                assert reply.headers["WWW-Authenticate"] == "Bearer"
            assert (await browser.get(mine["status_url"])).status_code == 401
        ws = f"ws://{address}"
        first, _ = await first_close(ws + mine["ws_url"], {})
        assert first is not None
        assert first["task_id"] == mine["task_id"]
        wrong = f"{ws}{TASKS}/{other['task_id']}/ws?token={token}"
        assert await first_close(wrong, {}) == (None, 4401)
{%- if cookiecutter.__examples == "yes" %}


async def test_bulk_email_needs_its_own_scope(settings: Settings) -> None:
    """send_bulk_emails is sensitive: tasks:submit does not cover it, its own scope does."""
    (plain, bulk), entries = keys(
        ("plain", ["tasks:submit"]), ("bulk", ["tasks:submit:send_bulk_emails"])
    )
    body = {
        "name": "send_bulk_emails",
        "args": {"recipients": ["a@example.com"], "subject": "Hi", "body": "Hello"},
    }
    async with app_with(settings, *entries) as app:
        async with client_of(app, plain) as client:
            refused = await client.post(TASKS, json=body)
            assert refused.status_code == 403
            assert "tasks:submit:send_bulk_emails" in refused.json()["detail"]
            assert (await client.post(TASKS, json=SUBMISSION)).status_code == 202
        async with client_of(app, bulk) as client:
            assert (await client.post(TASKS, json=body)).status_code == 202
            assert (await client.post(TASKS, json=SUBMISSION)).status_code == 403
{%- endif %}


async def test_each_principal_has_a_submission_rate_shared_by_all_api_processes(
    settings: Settings, redis: Redis
) -> None:
    """Past TASK_SUBMIT_RATE_LIMIT in a window: 429 with Retry-After, nothing queued, on every
    API process; another principal is not held back."""
    (alice, bob), entries = keys(("alice", ["tasks:submit"]), ("bob", ["tasks:submit"]))
    settings = settings.model_copy(
        update={"task_submit_rate_limit": 3, "task_submit_rate_window_s": 60.0}
    )
    async with app_with(settings, *entries) as first, app_with(settings, *entries) as second:
        async with client_of(first, alice) as on_first, client_of(second, alice) as on_second:
            for client in (on_first, on_second, on_first):
                assert (await client.post(TASKS, json=SUBMISSION)).status_code == 202
            queue = first.state.task_queue
            depth = await queue.pool.zcard(settings.task_queue)
            for client in (on_first, on_second):
                refused = await client.post(TASKS, json=SUBMISSION)
                assert refused.status_code == 429
                assert 0 < int(refused.headers["Retry-After"]) <= 60
                assert "Too many submissions" in refused.json()["detail"]
            assert await queue.pool.zcard(settings.task_queue) == depth
        async with client_of(second, bob) as client:
            assert (await client.post(TASKS, json=SUBMISSION)).status_code == 202


async def test_auth_disabled_lets_everyone_in_during_development_only(
    settings: Settings,
) -> None:
    development = settings.model_copy(update={"environment": "development", "auth_disabled": True})
    async with serve(create_app(development), key=None) as client:
        accepted = await client.post(TASKS, json=SUBMISSION)
        assert accepted.status_code == 202
        assert (await client.get(accepted.json()["status_url"])).status_code == 200
    for environment in ("test", "production"):
        refused = settings.model_copy(update={"environment": environment, "auth_disabled": True})
        with pytest.raises(AccessSettingsError, match="only with ENVIRONMENT=development"):
            create_app(refused)


def test_production_refuses_to_start_without_a_way_to_authenticate(settings: Settings) -> None:
    production = settings.model_copy(update={"environment": "production", "api_keys": []})
    missing = r"API_KEYS \(or AUTH_JWT_\*\), FOLLOW_TOKEN_SECRET, METRICS_TOKEN"
    with pytest.raises(AccessSettingsError, match=missing):
        create_app(production)
    _, [entry] = keys(("client", ["tasks:submit"]))
    with pytest.raises(AccessSettingsError, match="needs FOLLOW_TOKEN_SECRET, METRICS_TOKEN"):
        create_app(production.model_copy(update={"api_keys": [entry]}))
    keyed = {"api_keys": [entry], "follow_token_secret": SECRET}
    with pytest.raises(AccessSettingsError, match=r"needs METRICS_TOKEN \(or METRICS_PUBLIC"):
        create_app(production.model_copy(update=keyed))
    create_app(production.model_copy(update={**keyed, "metrics_token": SECRET}))
    create_app(production.model_copy(update={**keyed, "metrics_public": True}))
