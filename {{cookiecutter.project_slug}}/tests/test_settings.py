from pathlib import Path

import pytest
from pydantic import ValidationError

from {{ cookiecutter.__package_name }}.settings import Settings
{%- if cookiecutter.cache_backend != "none" %}


def test_redis_url_accepts_tls_and_a_password() -> None:
    """It takes rediss:// URLs with credentials, as managed Redis services hand them out."""
    settings = Settings(redis_url="rediss://:s3cret@cache.example.com:6380/2", _env_file=None)
    assert settings.redis_url.scheme == "rediss"
    assert settings.redis_url.password == "s3cret"
    assert settings.redis_url.port == 6380


def test_redis_url_rejects_other_schemes() -> None:
    """It refuses a URL that is not redis:// or rediss://, naming the field."""
    with pytest.raises(ValidationError, match="redis_url"):
        Settings(redis_url="http://cache.example.com:6379", _env_file=None)


def test_environment_variables_override_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    """It reads REDIS_URL and the pool size from the environment."""
    monkeypatch.setenv("REDIS_URL", "redis://:pw@redis.internal:6379/0")
    monkeypatch.setenv("REDIS_MAX_CONNECTIONS", "7")
    settings = Settings(_env_file=None)
    assert settings.redis_url.host == "redis.internal"
    assert settings.redis_max_connections == 7
{%- endif %}


def test_without_environment_the_service_is_in_production(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A deployment that forgets ENVIRONMENT gets production's checks, cookies and logs."""
    monkeypatch.delenv("ENVIRONMENT", raising=False)
    assert Settings(_env_file=None).environment == "production"


def test_dotenv_file_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """It reads settings from a .env file when the environment does not set them."""
    monkeypatch.delenv("LOG_LEVEL", raising=False)
    env_file = tmp_path / ".env"
    env_file.write_text("LOG_LEVEL=DEBUG\nUNRELATED_SECRET=ignored\n")
    assert Settings(_env_file=env_file).log_level == "DEBUG"


@pytest.mark.parametrize(
    ("name", "value"),
    [("LOG_LEVEL", "LOUD"), ("ENVIRONMENT", "staging"), ("CACHE_DEFAULT_TTL_S", "0")],
)
def test_bad_values_are_refused_at_start_up(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    """It fails fast with the offending field's name rather than running misconfigured."""
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError, match=name.lower()):
        Settings(_env_file=None)
