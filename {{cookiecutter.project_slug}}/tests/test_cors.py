"""Cross-origin calls from browsers: none by default, only the listed origins when set."""

import pytest

from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import serve

APP_ORIGIN = "https://app.example.com"
PREFLIGHT = {
    "Access-Control-Request-Method": "POST",
    "Access-Control-Request-Headers": "authorization",
}


async def test_no_origin_is_allowed_by_default(settings: Settings) -> None:
    """It sends no CORS header, so a browser keeps other sites' pages from reading answers."""
    async with serve(create_app(settings)) as client:
        preflight = await client.options(
            "/health/live", headers={"Origin": APP_ORIGIN, **PREFLIGHT}
        )
        answer = await client.get("/health/live", headers={"Origin": APP_ORIGIN})
    for response in (preflight, answer):
        assert "access-control-allow-origin" not in response.headers


async def test_listed_origins_and_no_others_are_allowed(settings: Settings) -> None:
    """It answers the preflight and the call of a listed origin, and nobody else's."""
    settings = settings.model_copy(update={"cors_allow_origins": [APP_ORIGIN]})
    async with serve(create_app(settings)) as client:
        preflight = await client.options(
            "/health/live", headers={"Origin": APP_ORIGIN, **PREFLIGHT}
        )
        assert preflight.status_code == 200
        assert preflight.headers["access-control-allow-origin"] == APP_ORIGIN
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in preflight.headers
        answer = await client.get("/health/live", headers={"Origin": APP_ORIGIN})
        assert answer.headers["access-control-allow-origin"] == APP_ORIGIN
        other = "https://evil.example"
        refused = await client.options("/health/live", headers={"Origin": other, **PREFLIGHT})
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        answer = await client.get("/health/live", headers={"Origin": other})
        assert "access-control-allow-origin" not in answer.headers


def test_origins_are_read_as_a_list_and_checked() -> None:
    settings = Settings(
        cors_allow_origins=f" {APP_ORIGIN}, http://localhost:5173 ,", _env_file=None
    )
    assert settings.cors_allow_origins == [APP_ORIGIN, "http://localhost:5173"]
    for bad in ("*", "https://app.example.com/path", "app.example.com"):
        with pytest.raises(ValueError, match="is not an origin"):
            Settings(cors_allow_origins=bad, _env_file=None)
