"""A task's live events: workers publish them on Redis pub/sub, each API process relays them.

Every event is one JSON object: `{"task_id", "status", "progress", "event", "data", "ts"}`.
The channel of a task is `task:events:<task_id>`. An API process holds one pub/sub connection
for all its subscribers, subscribed to the channels of the tasks someone follows right now.
"""

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from typing import Any

from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.exceptions import TimeoutError as RedisTimeoutError

from .redis import UNAVAILABLE_ERRORS

logger = logging.getLogger(__name__)
EVENTS_CHANNEL_PREFIX = "task:events:"
# Events a slow subscriber may fall behind by; older ones are dropped (the state re-check of
# the follower still brings it up to date).
SUBSCRIBER_BUFFER = 256
RECONNECT_DELAY_S = 1.0
# How long a new follower waits for Redis to confirm its channel's SUBSCRIBE.
SUBSCRIBE_TIMEOUT_S = 5.0

TaskEvent = dict[str, Any]


def task_event(
    task_id: str, status: str, progress: int | None, event: str, data: object = None
) -> TaskEvent:
    return {
        "task_id": task_id,
        "status": status,
        "progress": progress,
        "event": event,
        "data": data,
        "ts": time.time(),
    }


def events_channel(task_id: str) -> str:
    return EVENTS_CHANNEL_PREFIX + task_id


class TaskEventHub:
    """Fans out the events of one pub/sub connection to this process's subscribers."""

    def __init__(self, redis: Redis) -> None:
        self._pubsub: PubSub = redis.pubsub()
        self._subscribers: dict[str, set[asyncio.Queue[bytes]]] = {}
        # Channels whose SUBSCRIBE was sent and not yet confirmed by Redis: the reader sees the
        # confirmation (after which no event of the channel can be missed) and resolves these.
        self._confirmations: dict[str, asyncio.Future[None]] = {}
        self._changed = asyncio.Event()
        # Held while (un)subscribing: a follower is let go only once Redis confirmed its channel's
        # SUBSCRIBE, and the reader starts only once the connection exists.
        self._lock = asyncio.Lock()
        self._reader: asyncio.Task[None] | None = None
        self._closed = False

    @asynccontextmanager
    async def subscribe(self, task_id: str) -> AsyncIterator[asyncio.Queue[bytes]]:
        """The raw events of `task_id` from now on, while the context is open."""
        channel = events_channel(task_id)
        inbox: asyncio.Queue[bytes] = asyncio.Queue(SUBSCRIBER_BUFFER)
        try:
            async with self._lock:
                confirmed = None
                if channel not in self._subscribers:
                    confirmed = asyncio.get_running_loop().create_future()
                    self._confirmations[channel] = confirmed
                    await self._pubsub.subscribe(channel)
                self._subscribers.setdefault(channel, set()).add(inbox)
                if self._reader is None:
                    self._reader = asyncio.create_task(self._read(), name="task-event-hub")
                self._changed.set()
                if confirmed is not None:
                    try:
                        await asyncio.wait_for(confirmed, SUBSCRIBE_TIMEOUT_S)
                    except TimeoutError:
                        raise RedisTimeoutError(f"no confirmation of SUBSCRIBE {channel}") from None
                    finally:
                        self._confirmations.pop(channel, None)
            yield inbox
        finally:
            subscribers = self._subscribers.get(channel, set())
            subscribers.discard(inbox)  # at once, even if the lock is never had
            if not subscribers:
                async with self._lock:
                    if not self._subscribers.get(channel):  # nobody came for it meanwhile
                        self._subscribers.pop(channel, None)
                        with suppress(*UNAVAILABLE_ERRORS):
                            await self._pubsub.unsubscribe(channel)

    async def close(self) -> None:
        # The flag, as well as the cancel: on Python 3.11 a cancellation can be lost inside
        # redis-py's reads (asyncio.wait_for), and the loop must still end.
        self._closed = True
        self._changed.set()
        if self._reader is not None:
            self._reader.cancel()
            with suppress(asyncio.CancelledError):
                await self._reader
        await self._pubsub.aclose()

    async def _read(self) -> None:
        while not self._closed:
            if not self._subscribers:
                self._changed.clear()
                await self._changed.wait()
                continue
            try:
                message = await self._pubsub.get_message(timeout=1.0)
            except UNAVAILABLE_ERRORS as exc:
                # redis-py reconnects on the next read and subscribes to the channels again.
                logger.warning("task events: %s; reconnecting", exc)
                await asyncio.sleep(RECONNECT_DELAY_S)
                continue
            if message is None:
                continue
            channel = message["channel"]
            channel = channel.decode() if isinstance(channel, bytes) else channel
            if message["type"] == "subscribe":
                confirmed = self._confirmations.get(channel)
                if confirmed is not None and not confirmed.done():
                    confirmed.set_result(None)
                continue
            if message["type"] != "message":
                continue
            for inbox in self._subscribers.get(channel, ()):
                if inbox.full():
                    inbox.get_nowait()
                inbox.put_nowait(message["data"])


async def task_changes(
    redis: Redis, wake_channels: Sequence[str], *, batch_s: float, idle_s: float
) -> AsyncGenerator[set[str]]:
    """The ids of the tasks that changed (an event of theirs was published), "" standing for
    a task enqueued or aborted (a message on its queue's wake channel): one batch at most every
    `batch_s`, and an empty one after `idle_s` without changes. One pub/sub connection of its
    own, for the operator console; a Redis error ends it (the browser reconnects)."""
    pubsub = redis.pubsub()
    loop = asyncio.get_running_loop()
    try:
        await pubsub.psubscribe(EVENTS_CHANNEL_PREFIX + "*")
        await pubsub.subscribe(*wake_channels)
        changed: set[str] = set()
        flush_at = idle_at = loop.time() + idle_s
        while True:
            wait_s = max(0.0, (flush_at if changed else idle_at) - loop.time())
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=wait_s)
            if message is not None:
                channel = message["channel"]
                channel = channel.decode() if isinstance(channel, bytes) else channel
                if not changed:
                    flush_at = loop.time() + batch_s
                is_event = message["type"] == "pmessage"
                changed.add(channel.removeprefix(EVENTS_CHANNEL_PREFIX) if is_event else "")
            now = loop.time()
            if changed and now >= flush_at:
                yield changed
                changed = set()
                idle_at = now + idle_s
            elif not changed and now >= idle_at:
                yield changed
                idle_at = now + idle_s
    finally:
        await pubsub.aclose()
