import httpx
{%- if cookiecutter.cache_backend != "none" %}

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import free_port
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import serve
{%- endif %}


async def test_live_answers_ok(client: httpx.AsyncClient) -> None:
    """It says the process is up without touching any dependency."""
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
{%- if cookiecutter.cache_backend != "none" %}


async def test_ready_when_the_server_answers(client: httpx.AsyncClient, settings: Settings) -> None:
    """It reports every check as ok while the servers answer, and workers beside."""
    response = await client.get("/health/ready")
    assert response.status_code == 200
    no_worker = dict.fromkeys([settings.task_queue, settings.slow_task_queue], "no heartbeat")
{%- if cookiecutter.__database == "postgres" %}
    checks = {"redis": "ok", "database": "ok"}
    assert response.json() == {"status": "ok", "checks": checks, "workers": no_worker}
{%- else %}
    assert response.json() == {"status": "ok", "checks": {"redis": "ok"}, "workers": no_worker}
{%- endif %}


async def test_ready_is_503_when_the_server_is_unreachable() -> None:
    """It answers 503 with the reason and a Retry-After, never a 500."""
    port = free_port()
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{port}/0",
        redis_connect_timeout_s=0.5,
        environment="test",
        _env_file=None,
    )
    app = create_app(settings)
    async with serve(app) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    body = response.json()
    assert body["status"] == "unavailable"
    assert f"127.0.0.1:{port}" in body["checks"]["redis"]
{%- else %}


async def test_ready_with_no_external_dependency(client: httpx.AsyncClient) -> None:
    """It is ready at once: the in-process cache needs no server."""
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {}, "workers": {}}
{%- endif %}
