"""Server-side sessions in Redis: one hash per session, plus an index ordered by expiry.

Each hash expires by itself; the index is what the `cleanup_expired_sessions` cron job prunes.
"""

import secrets
import time
from collections.abc import Awaitable
from typing import cast

from redis.asyncio import Redis

from .redis import texts


class SessionStore:
    """Create, read and end sessions; `cleanup_expired` prunes the expiry index."""

    def __init__(self, redis: Redis, *, prefix: str, ttl_s: int) -> None:
        self._redis = redis
        self._prefix = prefix
        self._index = prefix + "index"
        self._ttl_s = ttl_s

    async def create(self, user_id: str) -> str:
        """Start a session for `user_id`; returns its unguessable token."""
        token = secrets.token_urlsafe(32)
        expires_at = time.time() + self._ttl_s
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._prefix + token, mapping={"user_id": user_id})
            pipe.expire(self._prefix + token, self._ttl_s)
            pipe.zadd(self._index, {token: expires_at})
            await pipe.execute()
        return token

    async def user_id(self, token: str) -> str | None:
        """The session's user, or None when it ended or expired."""
        return await cast(Awaitable[str | None], self._redis.hget(self._prefix + token, "user_id"))

    async def end(self, token: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(self._prefix + token)
            pipe.zrem(self._index, token)
            await pipe.execute()

    async def cleanup_expired(self, now: float | None = None) -> int:
        """Remove expired sessions from the index (and their hash, if still there)."""
        cutoff = time.time() if now is None else now
        expired = texts(await self._redis.zrangebyscore(self._index, "-inf", cutoff))
        if not expired:
            return 0
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(*(self._prefix + token for token in expired))
            pipe.zrem(self._index, *expired)
            await pipe.execute()
        return len(expired)
