import asyncio
{%- if cookiecutter.cache_backend != "none" %}

from redis.asyncio import Redis
{%- endif %}

from {{ cookiecutter.__package_name }}.infrastructure.cache import Cache
{%- if cookiecutter.cache_backend != "none" %}
from {{ cookiecutter.__package_name }}.settings import Settings
{%- endif %}


async def test_get_returns_what_set_stored(cache: Cache) -> None:
    """It returns the stored value, and None for a key never set."""
    await cache.set("greeting", "hello")
    assert await cache.get("greeting") == "hello"
    assert await cache.get("missing") is None


async def test_values_expire_after_their_ttl(cache: Cache) -> None:
    """It forgets a value once its time to live has passed."""
    await cache.set("short", "lived", ttl_s=1)
    await asyncio.sleep(1.2)
    assert await cache.get("short") is None


async def test_delete_says_whether_the_key_was_there(cache: Cache) -> None:
    """It removes a key and reports whether anything was removed."""
    await cache.set("gone", "soon")
    assert await cache.delete("gone") is True
    assert await cache.delete("gone") is False
    assert await cache.get("gone") is None


async def test_get_or_set_computes_only_on_a_miss(cache: Cache) -> None:
    """It calls the factory once, then serves the cached value."""
    calls = 0

    async def compute() -> str:
        nonlocal calls
        calls += 1
        return f"value-{calls}"

    assert await cache.get_or_set("report", compute) == "value-1"
    assert await cache.get_or_set("report", compute) == "value-1"
    assert calls == 1
{%- if cookiecutter.cache_backend != "none" %}


async def test_keys_live_under_the_prefix_with_a_ttl(
    cache: Cache, redis: Redis, settings: Settings
) -> None:
    """It namespaces keys and never stores one without an expiry."""
    await cache.set("user:1", "Ada")
    key = settings.cache_key_prefix + "user:1"
    assert await redis.get(key) == "Ada"
    assert 0 < await redis.ttl(key) <= settings.cache_default_ttl_s
{%- else %}


async def test_oldest_entries_are_evicted_beyond_max_entries(cache: Cache) -> None:
    """It keeps at most max_entries values, dropping the least recently written."""
    for key in ("a", "b", "c", "d"):
        await cache.set(key, key.upper())
    assert await cache.get("a") is None
    assert [await cache.get(key) for key in ("b", "c", "d")] == ["B", "C", "D"]
{%- endif %}
