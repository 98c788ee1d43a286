"""Safe when a setting is forgotten: the README's table of the settings that change safety,
walked row by row. Each row's check starts from Settings with nothing set (no environment
variable, no .env) and shows that what the row says the service does, it does."""

import re
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError
from redis.asyncio import Redis

from {{ cookiecutter.__package_name }}.api.auth import Access, AccessSettingsError
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import MIN_TOKEN_LENGTH, Settings

from .support import TEST_KEY, serve
from .test_console import sign_in

README = Path(__file__).resolve().parent.parent / "README.md"
HEADING = "### Safe when a setting is forgotten"
ROW = re.compile(r"^\| ((?:`[A-Z0-9_]+`(?:, )?)+) \|", re.MULTILINE)
SECRET = SecretStr("s" * MIN_TOKEN_LENGTH)
SUBMISSION = {"name": "example_task", "args": {"message": "m"}}
Check = Callable[[Settings, Settings], Awaitable[None]]


def table_rows() -> list[list[str]]:
    """The variables each row of the table names, in the README's order."""
    section = README.read_text().split(HEADING, 1)[1].split("\n\n#", 1)[0]
    return [re.findall(r"`([A-Z0-9_]+)`", cells) for cells in ROW.findall(section)]


@pytest.fixture
def forgotten(monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings as a deployment that set nothing gets them."""
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    return Settings(_env_file=None)


@pytest.fixture
def production(settings: Settings) -> Settings:
    """The test servers' settings in production, with only what production demands added."""
    update = {"environment": "production", "follow_token_secret": SECRET, "metrics_token": SECRET}
    return settings.model_copy(update=update)


async def environment(forgotten: Settings, production: Settings) -> None:
    assert forgotten.environment == "production"
    assert forgotten.log_json


async def auth_disabled(forgotten: Settings, production: Settings) -> None:
    assert forgotten.auth_disabled is False
    with pytest.raises(AccessSettingsError, match="only with ENVIRONMENT=development"):
        create_app(production.model_copy(update={"auth_disabled": True}))
    async with serve(create_app(production), key=None) as client:
        assert (await client.get("/api/v1/tasks/any")).status_code == 401


async def api_keys(forgotten: Settings, production: Settings) -> None:
    with pytest.raises(AccessSettingsError, match=r"API_KEYS \(or AUTH_JWT_\*\)"):
        create_app(production.model_copy(update={"api_keys": []}))
    assert Access(forgotten).jwt is None  # no identity provider's tokens are taken
    with pytest.raises(ValidationError, match="AUTH_JWT_AUDIENCE, AUTH_JWKS_URL must be set"):
        Settings(auth_jwt_issuer="https://id.example.com", _env_file=None)


async def follow_token_secret(forgotten: Settings, production: Settings) -> None:
    assert forgotten.follow_token_secret is None
    with pytest.raises(AccessSettingsError, match="FOLLOW_TOKEN_SECRET"):
        create_app(production.model_copy(update={"follow_token_secret": None}))
    with pytest.raises(ValidationError, match=f"at least {MIN_TOKEN_LENGTH} characters"):
        Settings(follow_token_secret="short", _env_file=None)


async def follow_token_ttl_s(forgotten: Settings, production: Settings) -> None:
    before = time.time()
    token = Access(forgotten).follow_tokens.sign("a-task")
    expires = int(token.partition(".")[0])  # the link stops working then
    assert before + 899 <= expires <= time.time() + 900


async def metrics_token(forgotten: Settings, production: Settings) -> None:
    assert (forgotten.metrics_token, forgotten.metrics_public) == (None, False)
    with pytest.raises(AccessSettingsError, match=r"METRICS_TOKEN \(or METRICS_PUBLIC=true\)"):
        create_app(production.model_copy(update={"metrics_token": None}))
    async with serve(create_app(production), key=None) as client:
        assert (await client.get("/metrics")).status_code == 401


async def console_session_ttl_s(forgotten: Settings, production: Settings) -> None:
    async with serve(create_app(production), key=None) as client:
        signed_in = await sign_in(client, TEST_KEY)
    assert signed_in.status_code == 303
    cookie = signed_in.headers["set-cookie"].lower()
    for attribute in ("secure", "httponly", "samesite=strict"):
        assert attribute in cookie, cookie
    assert f"max-age={forgotten.console_session_ttl_s}" in cookie
    assert forgotten.console_session_ttl_s == 8 * 3600


async def cors_allow_origins(forgotten: Settings, production: Settings) -> None:
    assert forgotten.cors_allow_origins == []
    preflight = {"Origin": "https://elsewhere.example", "Access-Control-Request-Method": "POST"}
    async with serve(create_app(production)) as client:
        reply = await client.options("/api/v1/tasks", headers=preflight)
    assert "access-control-allow-origin" not in reply.headers


async def api_max_body_bytes(forgotten: Settings, production: Settings) -> None:
    body = b'{"name": "example_task", "args": {"message": "' + b"x" * 65_536 + b'"}}'
    async with serve(create_app(production)) as client:
        reply = await client.post(
            "/api/v1/tasks", content=body, headers={"Content-Type": "application/json"}
        )
    assert reply.status_code == 413
    assert forgotten.api_max_body_bytes == 65_536


async def task_submit_rate_limit(forgotten: Settings, production: Settings) -> None:
    assert forgotten.task_submit_rate_limit == 1_000  # 0 would lift it
    limits = {"task_submit_rate_limit", "task_submit_rate_window_s"}
    with_defaults = production.model_copy(update=defaults_of(forgotten, limits))
    async with serve(create_app(with_defaults)) as client:
        for n in range(forgotten.task_submit_rate_limit):
            assert (await client.post("/api/v1/tasks", json=SUBMISSION)).status_code == 202, n
        refused = await client.post("/api/v1/tasks", json=SUBMISSION)
    assert refused.status_code == 429
    assert 0 < int(refused.headers["Retry-After"]) <= forgotten.task_submit_rate_window_s


async def task_max_queue_depth(forgotten: Settings, production: Settings) -> None:
    assert forgotten.task_max_queue_depth == 100_000
    with_defaults = production.model_copy(update=defaults_of(forgotten, {"task_max_queue_depth"}))
    async with Redis.from_url(str(production.redis_queue_url)) as queue:
        for start in range(0, forgotten.task_max_queue_depth, 10_000):
            due_ms = int(time.time() * 1000)
            waiting = {f"waiting-{n}": due_ms for n in range(start, start + 10_000)}
            await queue.zadd(production.task_queue, waiting)
    async with serve(create_app(with_defaults)) as client:
        refused = await client.post("/api/v1/tasks", json=SUBMISSION)
    assert refused.status_code == 503
    assert "full" in refused.json()["detail"]
    assert int(refused.headers["Retry-After"]) > 0


def defaults_of(forgotten: Settings, names: set[str]) -> dict[str, object]:
    return {name: getattr(forgotten, name) for name in names}


CHECKS: dict[str, Check] = {
    check.__name__.upper(): check
    for check in (
        environment,
        auth_disabled,
        api_keys,
        follow_token_secret,
        follow_token_ttl_s,
        metrics_token,
        console_session_ttl_s,
        cors_allow_origins,
        api_max_body_bytes,
        task_submit_rate_limit,
        task_max_queue_depth,
    )
}


def test_the_table_and_the_checks_name_the_same_settings() -> None:
    rows = table_rows()
    assert [row[0] for row in rows] == list(CHECKS)
    for variables in rows:
        for variable in variables:
            assert variable.lower() in Settings.model_fields, variable


@pytest.mark.parametrize("variable", list(CHECKS))
async def test_a_forgotten_setting_is_safe(
    variable: str, forgotten: Settings, production: Settings, redis: Redis
) -> None:
    await CHECKS[variable](forgotten, production)
