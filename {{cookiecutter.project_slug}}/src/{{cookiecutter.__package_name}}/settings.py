"""The service's configuration: one class, read from the environment and a `.env` file."""

import re
from functools import lru_cache
{%- if cookiecutter.__examples == "yes" %}
from pathlib import Path
{%- endif %}
from typing import Annotated, Literal{% if cookiecutter.cache_backend != "none" %}, Self{% endif %}
{%- if cookiecutter.cache_backend != "none" %}
from urllib.parse import urlsplit
{%- endif %}

{% if cookiecutter.cache_backend != "none" -%}
from pydantic import (
    Field,
    HttpUrl,
    RedisDsn,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)
{%- else -%}
from pydantic import Field, field_validator
{%- endif %}
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
{%- if cookiecutter.cache_backend != "none" %}

from .access import ApiKey, parse_key_entry
{%- endif %}

ORIGIN = re.compile(r"https?://[^/\s*]+")
{%- if cookiecutter.cache_backend != "none" %}
MIN_TOKEN_LENGTH = 16
{%- endif %}
{%- if cookiecutter.__database == "postgres" %}
POSTGRES_SCHEMES = frozenset({"postgres", "postgresql", "postgresql+asyncpg"})
# A local run's database is named for the package.
PACKAGE = __name__.partition(".")[0]
{%- endif %}


def split_commas(value: object) -> object:
    """A comma-separated environment value as a list of its non-empty, trimmed items."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Every setting's default is the safe one for production (a deployment that forgets a
    setting gets the strict behaviour); the project's `.env` says development for `just dev`.
    `.env.example` lists them all."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    app_name: str = "{{ cookiecutter.project_name }}"
    environment: Literal["development", "test", "production"] = "production"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # json: one JSON object per line, for log collectors; console: readable lines. Unset:
    # console in development, json elsewhere.
    log_format: Literal["json", "console"] | None = None
    # false: the start and stop lines of each process are left out (`just dev` sets it, so
    # that a reload logs one line: the file that changed).
    log_lifecycle: bool = True
    # Larger request bodies are refused with 413.
    api_max_body_bytes: int = Field(default=65_536, gt=0)
    # Browser origins allowed to call the API from their pages (CORS), comma-separated, e.g.
    # "https://app.example.com". Empty: none, so browsers keep other sites' pages out.
    cors_allow_origins: Annotated[list[str], NoDecode] = []
{%- if cookiecutter.cache_backend != "none" %}

    # redis:// or rediss:// (TLS), with an optional password: redis://:secret@host:6379/0.
    redis_url: RedisDsn = RedisDsn("redis://localhost:6379/0")
    redis_max_connections: int = Field(default=50, gt=0)
    redis_connect_timeout_s: float = Field(default=2.0, gt=0)
    redis_socket_timeout_s: float = Field(default=5.0, gt=0)
    redis_health_check_interval_s: int = Field(default=30, ge=0)
    # Redis Sentinel, for high availability: "host:port" of each sentinel, comma-separated.
    # When set, the master named REDIS_SENTINEL_MASTER is used, and REDIS_URL gives only the
    # credentials, the cache's database and TLS (rediss://); its host is not used.
    redis_sentinels: Annotated[list[str], NoDecode] = []
    redis_sentinel_master: str = "mymaster"

    cache_key_prefix: str = "{{ cookiecutter.project_slug }}:cache:"

    # The task queue lives in its own logical database, so flushing the cache (REDIS_URL's
    # database) never drops queued tasks.
    redis_queue_db: int = Field(default=1, ge=0)
    # Queue names: fast, short work on the default queue; long work on the slow one, served by
    # its own workers so that it cannot starve the default queue.
    task_queue: str = "{{ cookiecutter.project_slug }}:tasks"
    slow_task_queue: str = "{{ cookiecutter.project_slug }}:tasks:slow"
    # Worker behaviour; every value is explained in docs/background-tasks.md.
    worker_max_jobs: int = Field(default=10, gt=0)
    worker_job_timeout_s: float = Field(default=300.0, gt=0)
    worker_keep_result_s: float = Field(default=3600.0, gt=0)
    worker_poll_delay_s: float = Field(default=0.5, gt=0)
    worker_max_tries: int = Field(default=3, gt=0)
    worker_retry_delay_s: float = Field(default=1.0, ge=0)
    worker_retry_max_delay_s: float = Field(default=300.0, ge=0)
    worker_health_check_interval_s: float = Field(default=5.0, gt=0)
    worker_job_completion_wait_s: float = Field(default=30.0, ge=0)
    # A running task's claim expires this long after its worker stops renewing it (a crash):
    # then another worker runs it again. arq alone would wait job_timeout + 10 s.
    worker_lease_s: float = Field(default=10.0, ge=1)
    # Tasks the API accepts: the longest deferral and the largest request body.
    task_max_defer_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    # Followers of a task's events (SSE, WebSocket) re-read its stored state this often when
    # no event arrives, so that they never wait on an event that was lost.
    task_events_recheck_s: float = Field(default=1.0, gt=0)
    # Load shedding: submissions get 503 (with Retry-After) while their queue holds this many
    # tasks (waiting, deferred or running), rather than growing Redis's memory without bound.
    task_max_queue_depth: int = Field(default=100_000, gt=0)
    # Each principal (API key, token subject) may submit at most TASK_SUBMIT_RATE_LIMIT tasks
    # per TASK_SUBMIT_RATE_WINDOW_S, counted in Redis across API processes (429 past it);
    # 0 lifts the limit.
    task_submit_rate_limit: int = Field(default=1_000, ge=0)
    task_submit_rate_window_s: float = Field(default=60.0, gt=0)
    # Tasks that failed for good are kept for inspection and retry, the newest this many.
    task_dead_letter_max: int = Field(default=10_000, gt=0)
    # The operator console (/console) lists finished tasks for CONSOLE_HISTORY_S, the newest
    # CONSOLE_HISTORY_MAX at most (about 1.6 KB of Redis memory each), and keeps an operator
    # signed in for CONSOLE_SESSION_TTL_S.
    console_history_s: float = Field(default=7 * 24 * 3600.0, gt=0)
    console_history_max: int = Field(default=100_000, gt=0)
    console_session_ttl_s: int = Field(default=8 * 3600, gt=0)
    # API keys, comma-separated `NAME:SCOPE+SCOPE:SHA256` entries, made by
    # `just key NAME --scope SCOPE` (python -m <package>.keys create ...).
    api_keys: Annotated[list[ApiKey], NoDecode] = []
    # Bearer JWTs of an OpenID Connect provider, checked against its keys (all three or none):
    # the `iss` and `aud` the tokens must carry, and where the provider publishes its JWKS.
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwks_url: HttpUrl | None = None
    # Everyone may do everything: for ENVIRONMENT=development only, refused otherwise.
    auth_disabled: bool = False
    # Signs the links that let a browser follow one task (events_url, ws_url); every API
    # process needs the same one. Unset: a random one per process (fine for one process).
    follow_token_secret: SecretStr | None = None
    follow_token_ttl_s: float = Field(default=900.0, gt=0)
    # When set, GET /metrics requires `Authorization: Bearer <METRICS_TOKEN>` (give it to the
    # scraper). Production refuses to start without it, unless METRICS_PUBLIC=true leaves
    # /metrics open on purpose.
    metrics_token: SecretStr | None = None
    metrics_public: bool = False
    session_ttl_s: int = Field(default=86_400, gt=0)
{%- if cookiecutter.__database == "postgres" %}

    # PostgreSQL: postgresql://user:password@host:5432/name (postgres:// and
    # postgresql+asyncpg:// are taken too). Unset in development: `just dev` and the tests start
    # an embedded server and set it.
    database_url: SecretStr = SecretStr(f"postgresql+asyncpg://postgres@localhost:5432/{PACKAGE}")
    # Connections each process keeps open, how many more it may open at peaks, and how long a
    # request waits for one before failing; a statement running longer is cancelled.
    database_pool_size: int = Field(default=10, gt=0)
    database_max_overflow: int = Field(default=10, ge=0)
    database_pool_timeout_s: float = Field(default=10.0, gt=0)
    database_connect_timeout_s: float = Field(default=5.0, gt=0)
    database_statement_timeout_s: float = Field(default=30.0, gt=0)
    # The outbox relay (enqueue on commit) looks for committed tasks this often when no
    # notification wakes it.
    outbox_poll_interval_s: float = Field(default=5.0, gt=0)
{%- endif %}
{%- if cookiecutter.__examples == "yes" %}

    # The media example: uploads and what the media tasks make of them, one folder per upload.
    # The API and the workers must share this folder.
    media_dir: Path = Path("media")
    media_max_upload_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    media_max_pixels: int = Field(default=40_000_000, gt=0)
    # The e-mail example: an SMTP server (`just mailbox` runs one that prints what it gets).
    smtp_host: str = "localhost"
    smtp_port: int = Field(default=1025, gt=0, lt=65_536)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_starttls: bool = False
    smtp_timeout_s: float = Field(default=10.0, gt=0)
    email_sender: str = "{{ cookiecutter.project_slug }}@localhost"
    # At most EMAIL_RATE_LIMIT messages per EMAIL_RATE_WINDOW_S, across all workers.
    email_rate_limit: int = Field(default=60, gt=0)
    email_rate_window_s: float = Field(default=60.0, gt=0)
    # Recipient domains the e-mail tasks may send to, comma-separated (e.g. "example.com");
    # empty allows any. Other recipients are refused by the API and by the tasks.
    email_allowed_recipient_domains: Annotated[list[str], NoDecode] = []
{%- endif %}
{%- else %}

    cache_max_entries: int = Field(default=10_000, gt=0)
{%- endif %}
    cache_default_ttl_s: int = Field(default=300, gt=0)

    @property
    def log_json(self) -> bool:
        if self.log_format is not None:
            return self.log_format == "json"
        return self.environment != "development"

    @field_validator("cors_allow_origins", mode="before")
    @classmethod
    def check_origins(cls, value: object) -> object:
        value = split_commas(value)
        for origin in value if isinstance(value, list) else []:
            if not ORIGIN.fullmatch(str(origin)):
                raise ValueError(
                    f"{origin!r} is not an origin: give scheme and host (and port), such as "
                    "https://app.example.com, without a path or '*'"
                )
        return value
{%- if cookiecutter.cache_backend != "none" %}

    @field_validator("api_keys", mode="before")
    @classmethod
    def parse_api_keys(cls, value: object) -> object:
        value = split_commas(value)
        if not isinstance(value, list) or not all(isinstance(entry, str) for entry in value):
            return value
        keys = [parse_key_entry(entry) for entry in value]
        names = [key.name for key in keys]
        if len(set(names)) < len(names):
            raise ValueError("two API_KEYS entries have the same name")
        if len({key.sha256 for key in keys}) < len(keys):
            raise ValueError("two API_KEYS entries have the same key")
        return keys

    @field_validator("auth_jwt_issuer", "auth_jwt_audience", "auth_jwks_url", mode="before")
    @classmethod
    def empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("follow_token_secret", "metrics_token", mode="before")
    @classmethod
    def check_token(cls, value: object, info: ValidationInfo) -> object:
        if value == "":
            return None  # empty: unset
        if isinstance(value, str) and len(value) < MIN_TOKEN_LENGTH:
            name = (info.field_name or "token").upper()
            raise ValueError(
                f"{name} must be at least {MIN_TOKEN_LENGTH} characters; make one with "
                "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
            )
        return value

{%- if cookiecutter.__examples == "yes" %}

    @field_validator("email_allowed_recipient_domains", mode="before")
    @classmethod
    def split_domains(cls, value: object) -> object:
        value = split_commas(value)
        return [str(item).lower() for item in value] if isinstance(value, list) else value
{%- endif %}

{%- if cookiecutter.__database == "postgres" %}

    @field_validator("database_url", mode="before")
    @classmethod
    def use_asyncpg(cls, value: object) -> object:
        """Any PostgreSQL URL, given the asyncpg driver that the engine needs."""
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if not isinstance(text, str):
            return value
        scheme, separator, rest = text.partition("://")
        if not separator or scheme not in POSTGRES_SCHEMES:
            raise ValueError(
                "DATABASE_URL must be a PostgreSQL URL such as "
                "postgresql://user:password@host:5432/name"
            )
        return f"postgresql+asyncpg://{rest}"
{%- endif %}

    @field_validator("redis_sentinels", mode="before")
    @classmethod
    def split_sentinels(cls, value: object) -> object:
        value = split_commas(value)
        if isinstance(value, list):
            for item in value:
                host, _, port = str(item).rpartition(":")
                if not host or not port.isdigit():
                    raise ValueError(f"{item!r} is not host:port")
        return value

    @property
    def redis_sentinel_hosts(self) -> list[tuple[str, int]]:
        pairs = (entry.rpartition(":") for entry in self.redis_sentinels)
        return [(host, int(port)) for host, _, port in pairs]

    @model_validator(mode="after")
    def jwt_settings_come_together(self) -> Self:
        jwt = {
            "AUTH_JWT_ISSUER": self.auth_jwt_issuer,
            "AUTH_JWT_AUDIENCE": self.auth_jwt_audience,
            "AUTH_JWKS_URL": self.auth_jwks_url,
        }
        missing = [name for name, value in jwt.items() if not value]
        if 0 < len(missing) < len(jwt):
            raise ValueError(
                f"{', '.join(missing)} must be set too: JWTs are checked with all three of "
                "AUTH_JWT_ISSUER, AUTH_JWT_AUDIENCE and AUTH_JWKS_URL, or not at all"
            )
        return self

    @model_validator(mode="after")
    def queue_db_differs_from_cache_db(self) -> Self:
        if self.redis_queue_db == self.redis_cache_db:
            raise ValueError(
                f"REDIS_QUEUE_DB ({self.redis_queue_db}) must differ from the database of "
                "REDIS_URL, so that flushing the cache never drops queued tasks"
            )
        return self

    @property
    def redis_cache_db(self) -> int:
        """The database number in REDIS_URL's path (0 when it has none)."""
        return int((self.redis_url.path or "/0").lstrip("/") or 0)

    @property
    def redis_queue_url(self) -> str:
        """REDIS_URL with the queue's database in place of the cache's."""
        return str(urlsplit(str(self.redis_url))._replace(path=f"/{self.redis_queue_db}").geturl())
{%- endif %}


@lru_cache
def get_settings() -> Settings:
    """The settings of this process, read once."""
    return Settings()
