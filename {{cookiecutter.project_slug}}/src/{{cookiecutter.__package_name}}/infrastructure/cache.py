"""A small string cache in {{ "FalkorDB" if cookiecutter.cache_backend == "falkordb" else "Redis" }}: every key has a prefix and a time to live."""

from collections.abc import Awaitable, Callable
from typing import cast

from redis.asyncio import Redis


class Cache:
    """Values shared by every API and worker process, expiring after `ttl_s` seconds."""

    def __init__(self, redis: Redis, *, prefix: str, default_ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._default_ttl_s = default_ttl_s

    async def get(self, key: str) -> str | None:
        return cast(str | None, await self._redis.get(self._prefix + key))

    async def set(self, key: str, value: str, *, ttl_s: int | None = None) -> None:
        await self._redis.set(self._prefix + key, value, ex=ttl_s or self._default_ttl_s)

    async def delete(self, key: str) -> bool:
        """Remove a key; True when it was there."""
        removed: int = await self._redis.delete(self._prefix + key)
        return removed > 0

    async def get_or_set(
        self, key: str, compute: Callable[[], Awaitable[str]], *, ttl_s: int | None = None
    ) -> str:
        """Return the cached value, computing and storing it on a miss."""
        cached = await self.get(key)
        if cached is not None:
            return cached
        value = await compute()
        await self.set(key, value, ttl_s=ttl_s)
        return value
