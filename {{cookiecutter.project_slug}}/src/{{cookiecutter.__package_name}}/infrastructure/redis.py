"""The one place that opens connections to {{ "FalkorDB" if cookiecutter.cache_backend == "falkordb" else "Redis" }}."""

from typing import Any

from redis.asyncio import Redis
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..settings import Settings


def create_redis(
    settings: Settings,
    *,
    queue: bool = False,
    decode_responses: bool = True,
    redis_class: type[Redis] = Redis,
) -> Redis:
    """A client with an explicit pool size and timeouts; connections open on first use.

    It uses the cache's database (REDIS_URL's), or with `queue` the queue's (REDIS_QUEUE_DB).
    With REDIS_SENTINELS set, it asks the sentinels for the current master before each new
    connection.
    """
    url = settings.redis_url
    options: dict[str, Any] = {
        "max_connections": settings.redis_max_connections,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "health_check_interval": settings.redis_health_check_interval_s,
        "decode_responses": decode_responses,
    }
    if settings.redis_sentinels:
        sentinel = Sentinel(  # type: ignore[no-untyped-call]
            settings.redis_sentinel_hosts,
            socket_connect_timeout=settings.redis_connect_timeout_s,
            socket_timeout=settings.redis_socket_timeout_s,
        )
        if url.scheme == "rediss":
            options["ssl"] = True
        master: Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=redis_class,
            db=settings.redis_queue_db if queue else settings.redis_cache_db,
            username=url.username,
            password=url.password,
            **options,
        )
        return master
    target = settings.redis_queue_url if queue else str(url)
    client: Redis = redis_class.from_url(target, **options)
    return client


async def close_redis(redis: Redis) -> None:
    """Close the client's pool and, behind Sentinel, its connections to the sentinels."""
    await redis.aclose(close_connection_pool=True)
    await close_sentinels(redis)


async def close_sentinels(redis: Redis) -> None:
    """Close the connections to the sentinels behind a client (none without Sentinel)."""
    manager = getattr(redis.connection_pool, "sentinel_manager", None)
    for sentinel in manager.sentinels if manager else []:
        await sentinel.aclose()


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
