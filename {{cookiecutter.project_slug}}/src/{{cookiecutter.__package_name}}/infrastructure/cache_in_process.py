"""A small string cache inside this process: every key has a time to live, the oldest go first."""

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable


class Cache:
    """Values local to one process, expiring after `ttl_s` seconds; at most `max_entries` kept."""

    def __init__(self, *, default_ttl_s: int, max_entries: int) -> None:
        self._default_ttl_s = default_ttl_s
        self._max_entries = max_entries
        self._entries: OrderedDict[str, tuple[float, str]] = OrderedDict()

    async def get(self, key: str) -> str | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        expires_at, value = entry
        if expires_at <= time.monotonic():
            del self._entries[key]
            return None
        return value

    async def set(self, key: str, value: str, *, ttl_s: int | None = None) -> None:
        self._entries.pop(key, None)
        self._entries[key] = (time.monotonic() + (ttl_s or self._default_ttl_s), value)
        while len(self._entries) > self._max_entries:
            self._entries.popitem(last=False)

    async def delete(self, key: str) -> bool:
        """Remove a key; True when it was there."""
        return self._entries.pop(key, None) is not None

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
