import time

from redis.asyncio import Redis

from {{ cookiecutter.__package_name }}.infrastructure.sessions import SessionStore


async def test_sessions_start_read_and_end(redis: Redis) -> None:
    """It gives each session an unguessable token that maps to its user until it ends."""
    store = SessionStore(redis, prefix="test:session:", ttl_s=60)
    token = await store.create("ada")
    assert len(token) >= 40
    assert await store.user_id(token) == "ada"
    assert 0 < await redis.ttl("test:session:" + token) <= 60
    await store.end(token)
    assert await store.user_id(token) is None


async def test_cleanup_prunes_only_expired_sessions(redis: Redis) -> None:
    """It removes sessions whose expiry has passed from the index, and keeps the others."""
    store = SessionStore(redis, prefix="test:session:", ttl_s=60)
    old = await store.create("ada")
    fresh = await store.create("grace")
    assert await store.cleanup_expired(now=time.time()) == 0
    await redis.zadd("test:session:index", {old: time.time() - 1})
    assert await store.cleanup_expired() == 1
    assert await redis.zrange("test:session:index", 0, -1) == [fresh]
    assert await store.user_id(old) is None
    assert await store.user_id(fresh) == "grace"
