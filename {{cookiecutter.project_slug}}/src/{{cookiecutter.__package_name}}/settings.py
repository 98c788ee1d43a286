"""The service's configuration: one class, read from the environment and a `.env` file."""

from functools import lru_cache
from typing import Literal

from pydantic import Field{% if cookiecutter.cache_backend != "none" %}, RedisDsn{% endif %}
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every setting has a default that works for local development; see `.env.example`."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    app_name: str = "{{ cookiecutter.project_name }}"
    environment: Literal["development", "test", "production"] = "development"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
{%- if cookiecutter.cache_backend != "none" %}

    # redis:// or rediss:// (TLS), with an optional password: redis://:secret@host:6379/0.
    redis_url: RedisDsn = RedisDsn("redis://localhost:6379/0")
    redis_max_connections: int = Field(default=50, gt=0)
    redis_connect_timeout_s: float = Field(default=2.0, gt=0)
    redis_socket_timeout_s: float = Field(default=5.0, gt=0)
    redis_health_check_interval_s: int = Field(default=30, ge=0)

    cache_key_prefix: str = "{{ cookiecutter.project_slug }}:cache:"
{%- else %}

    cache_max_entries: int = Field(default=10_000, gt=0)
{%- endif %}
    cache_default_ttl_s: int = Field(default=300, gt=0)


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
