"""The one place that opens connections to {{ "FalkorDB" if cookiecutter.cache_backend == "falkordb" else "Redis" }}."""

import asyncio
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.connection import AbstractConnection
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ReadOnlyError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from ..settings import Settings

logger = logging.getLogger(__name__)
# A patient client waits this long at most between two tries to reach the server.
PATIENT_MAX_DELAY_S = 2.0
# The patient clients' keep-alive: probes after 5 idle seconds, every 5 s, 3 unanswered, so a
# server whose host vanished (a partition, a failover that moved it) is an error within about
# 20 s; TCP_USER_TIMEOUT does the same for a request that is never acknowledged. Where the
# system lacks an option (the names are Linux's), its own default stays.
KEEPALIVE_OPTIONS = {
    option: value
    for name, value in (
        ("TCP_KEEPIDLE", 5),
        ("TCP_KEEPINTVL", 5),
        ("TCP_KEEPCNT", 3),
        ("TCP_USER_TIMEOUT", 20_000),
    )
    if (option := getattr(socket, name, None)) is not None
}


def create_redis(
    settings: Settings,
    *,
    queue: bool = False,
    decode_responses: bool = True,
    redis_class: type[Redis] = Redis,
    patient: bool = False,
) -> Redis:
    """A client with an explicit pool size and timeouts; connections open on first use.

    It uses the cache's database (REDIS_URL's), or with `queue` the queue's (REDIS_QUEUE_DB).
    With REDIS_SENTINELS set, it asks the sentinels for the current master before each new
    connection. A `patient` client (the workers') never gives up while the server is down: it
    retries connecting and every command, backing off up to PATIENT_MAX_DELAY_S, and goes on
    when the server is back. The API's client fails at once instead, so that it answers 503.

    A caller finding every connection of the pool (REDIS_MAX_CONNECTIONS) in use waits for one
    to be free: the API's clients as long as for a reply (REDIS_SOCKET_TIMEOUT_S, then the
    server counts as unavailable), the patient ones for as long as it takes.

    READONLY (a failover made the server of this connection a replica, and the address now
    leads to the new master) drops the connection and tries once more on a new one; a patient
    client goes on until a master takes the write. A refused write ran nothing, so sending it
    again is safe.
    """
    url = settings.redis_url
    options: dict[str, Any] = {
        "max_connections": settings.redis_max_connections,
        "socket_connect_timeout": settings.redis_connect_timeout_s,
        "socket_timeout": settings.redis_socket_timeout_s,
        "health_check_interval": settings.redis_health_check_interval_s,
        "decode_responses": decode_responses,
        # With no retry given, redis-py makes one of a single try, on a new connection.
        "retry_on_error": [ReadOnlyError],
    }
    if patient:
        options["retry"] = Retry(ExponentialBackoff(cap=PATIENT_MAX_DELAY_S, base=0.05), -1)
        options["retry_on_error"] = [RedisConnectionError, RedisTimeoutError, ReadOnlyError]
        # No socket timeout (arq's choice too): on Python 3.11, the asyncio.wait_for that
        # redis-py wraps each send in can swallow a cancellation, and a worker told to stop
        # would go on polling. Keep-alive probes find a dead peer instead.
        options["socket_timeout"] = None
        options["socket_keepalive"] = True
        options["socket_keepalive_options"] = KEEPALIVE_OPTIONS
    if settings.redis_sentinels:
        sentinel = Sentinel(
            settings.redis_sentinel_hosts,
            socket_connect_timeout=settings.redis_connect_timeout_s,
            socket_timeout=settings.redis_socket_timeout_s,
        )
        if url.scheme == "rediss":
            options["ssl"] = True
        master: Redis = sentinel.master_for(
            settings.redis_sentinel_master,
            redis_class=redis_class,
            connection_pool_class=PatientSentinelPool if patient else WaitingSentinelPool,
            timeout=None if patient else settings.redis_socket_timeout_s,
            db=settings.redis_queue_db if queue else settings.redis_cache_db,
            username=url.username,
            password=url.password,
            **options,
        )
        return master
    target = settings.redis_queue_url if queue else str(url)
    pool_class = PatientPool if patient else BlockingConnectionPool
    timeout_s = None if patient else settings.redis_socket_timeout_s
    return redis_class.from_pool(pool_class.from_url(target, timeout=timeout_s, **options))


# Untyped in redis-py (a decorator that warns of deprecated arguments).
_get_connection = cast(
    Callable[[BlockingConnectionPool], Awaitable[AbstractConnection]],
    BlockingConnectionPool.get_connection,
)


async def wait_for_connection(pool: BlockingConnectionPool) -> AbstractConnection:
    """A connection of `pool`, trying again while the server cannot be reached."""
    delay_s = 0.05
    while True:
        try:
            return await _get_connection(pool)
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if delay_s == 0.05:
                logger.warning("the server is unreachable (%s); waiting for it", describe(exc))
            await asyncio.sleep(delay_s)
            delay_s = min(2 * delay_s, PATIENT_MAX_DELAY_S)


class PatientPool(BlockingConnectionPool):
    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        return await wait_for_connection(self)


class WaitingSentinelPool(SentinelConnectionPool, BlockingConnectionPool):
    """The pool behind Sentinel's master, waiting for a free connection as the others do."""


class PatientSentinelPool(WaitingSentinelPool):
    async def get_connection(self, *args: Any, **kwargs: Any) -> AbstractConnection:
        return await wait_for_connection(self)


def texts(reply: Iterable[Any]) -> list[str]:
    """The members of a list reply as text: the queue's clients read bytes."""
    return [member.decode() if isinstance(member, bytes) else str(member) for member in reply]


def describe(exc: BaseException) -> str:
    """An error for a log line: its class and its message (a redis-py error's repr gives
    only its category and class)."""
    message = str(exc)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


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
    # Still a replica after the retry on a new connection: a failover under way.
    ReadOnlyError,
)
