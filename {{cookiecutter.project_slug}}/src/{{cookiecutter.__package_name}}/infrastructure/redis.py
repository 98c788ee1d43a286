"""The one place that opens connections to {{ "FalkorDB" if cookiecutter.cache_backend == "falkordb" else "Redis" }}."""

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..settings import Settings


def create_redis(settings: Settings) -> Redis:
    """A client with an explicit pool size and timeouts; connections open on first use."""
    client: Redis = Redis.from_url(
        str(settings.redis_url),
        max_connections=settings.redis_max_connections,
        socket_connect_timeout=settings.redis_connect_timeout_s,
        socket_timeout=settings.redis_socket_timeout_s,
        health_check_interval=settings.redis_health_check_interval_s,
        decode_responses=True,
    )
    return client


async def ping(redis: Redis) -> None:
    """Raise `RedisUnavailableError` unless the server answers PING."""
    try:
        await redis.ping()
    except (RedisError, OSError) as exc:
        raise RedisUnavailableError(str(exc) or type(exc).__name__) from exc


class RedisUnavailableError(Exception):
    """The server did not answer: down, unreachable, or refusing our credentials."""


# What a call raises while the server is down or unreachable (the API answers 503).
UNAVAILABLE_ERRORS: tuple[type[Exception], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    RedisUnavailableError,
)
