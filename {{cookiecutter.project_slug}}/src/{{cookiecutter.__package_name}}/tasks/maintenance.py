"""Cron jobs: housekeeping that runs on a schedule, once across all workers."""

import logging
import time
from typing import Any

from ..infrastructure.queue import TaskQueue
from ..infrastructure.sessions import SessionStore
from ..settings import Settings

logger = logging.getLogger(__name__)
STALE_AFTER_S = 3600


async def cleanup_expired_sessions(ctx: dict[str, Any]) -> int:
{%- if cookiecutter.__database == "postgres" %}
    """Daily at 03:00: delete expired sessions from the database."""
    settings: Settings = ctx["settings"]
    store = SessionStore(ctx["db"], ttl_s=settings.session_ttl_s)
{%- else %}
    """Daily at 03:00: prune expired sessions from the session index."""
    settings: Settings = ctx["settings"]
    prefix = settings.cache_key_prefix + "session:"
    store = SessionStore(ctx["cache_redis"], prefix=prefix, ttl_s=settings.session_ttl_s)
{%- endif %}
    removed = await store.cleanup_expired()
    logger.info("removed %d expired sessions", removed)
    return removed


async def log_queue_depths(ctx: dict[str, Any]) -> dict[str, int]:
    """Every 30 minutes: log how many tasks wait on each queue, for operators and alerts."""
    tasks: TaskQueue = ctx["tasks"]
    depths = {queue: int(await tasks.pool.zcard(queue)) for queue in tasks.queues}
    logger.info("queue depths: %s", depths)
    return depths


async def report_stale_tasks(ctx: dict[str, Any]) -> dict[str, int]:
    """Weekdays at 09:00: warn about tasks due for over an hour and still waiting, the sign of
    too few workers or of a queue no worker serves."""
    tasks: TaskQueue = ctx["tasks"]
    cutoff_ms = (time.time() - STALE_AFTER_S) * 1000
    stale = {
        queue: int(await tasks.pool.zcount(queue, "-inf", cutoff_ms)) for queue in tasks.queues
    }
    if any(stale.values()):
        logger.warning("tasks waiting over %d s: %s", STALE_AFTER_S, stale)
    return stale
