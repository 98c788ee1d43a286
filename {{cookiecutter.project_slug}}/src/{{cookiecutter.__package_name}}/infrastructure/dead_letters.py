"""Tasks that failed for good, kept where operators can list and retry them."""

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import deserialize_result

from .redis import texts
from .serialization import deserialize, serialize

# A sorted set of the ids by when they failed, one per task name, and one JSON record each.
DEAD_LETTERS_KEY = "task:dead-letters"
DEAD_LETTERS_BY_NAME_PREFIX = "task:dead-letters:name:"
DEAD_LETTER_PREFIX = "task:dead-letter:"


@dataclass(frozen=True)
class DeadLetter:
    """A task that failed for good, as `GET /api/v1/tasks?status=failed` lists it."""

    task_id: str
    name: str
    args: dict[str, Any]
    positional_args: list[Any]
    error: str
    traceback: str | None
    tries: int
    queue: str
    enqueued_at: datetime
    failed_at: datetime


class DeadLetterStore:
    """The newest `keep` dead letters: name, arguments, error, traceback, tries and times."""

    def __init__(self, redis: ArqRedis, keep: int) -> None:
        self.redis = redis
        self.keep = keep

    async def record(self, task_id: str, traceback: str | None) -> None:
        """Record a task whose stored result is a failure, dropping the oldest past `keep`."""
        result_raw = await self.redis.get(result_key_prefix + task_id)
        if not result_raw:
            return
        result = deserialize_result(cast(bytes, result_raw), deserializer=deserialize)
        await self.add(
            {
                "task_id": task_id,
                "name": result.function,
                "args": result.kwargs,
                "positional_args": list(result.args),
                "error": str(result.result),
                "traceback": traceback,
                "tries": result.job_try,
                "queue": result.queue_name,
                "enqueued_at": result.enqueue_time.isoformat(),
                "failed_at": result.finish_time.isoformat(),
            }
        )

    async def add(self, record: dict[str, Any]) -> None:
        """Keep a dead letter (the fields of `DeadLetter`, times in ISO 8601), dropping the
        oldest past `keep`."""
        task_id = record["task_id"]
        # Ordered by when it was recorded, to the microsecond: tries that fail within one
        # millisecond (arq's resolution) still list newest first.
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.set(DEAD_LETTER_PREFIX + task_id, serialize(record))
            pipe.zadd(DEAD_LETTERS_KEY, {task_id: now})
            pipe.zadd(DEAD_LETTERS_BY_NAME_PREFIX + record["name"], {task_id: now})
            pipe.zrange(DEAD_LETTERS_KEY, 0, -self.keep - 1)
            *_, overflow = await pipe.execute()
        if overflow:
            old_ids = [old.decode() for old in overflow]
            old_records = await self.redis.mget([DEAD_LETTER_PREFIX + old for old in old_ids])
            async with self.redis.pipeline(transaction=True) as pipe:
                pipe.zrem(DEAD_LETTERS_KEY, *old_ids)
                pipe.delete(*(DEAD_LETTER_PREFIX + old for old in old_ids))
                for old, raw in zip(old_ids, old_records, strict=True):
                    if raw:
                        pipe.zrem(DEAD_LETTERS_BY_NAME_PREFIX + deserialize(raw)["name"], old)
                await pipe.execute()

    async def newest(
        self, *, limit: int, offset: int = 0, name: str | None = None
    ) -> list[DeadLetter]:
        """Dead letters (of task `name`, when given), the most recent first."""
        key = DEAD_LETTERS_BY_NAME_PREFIX + name if name else DEAD_LETTERS_KEY
        ids = await self.redis.zrevrange(key, offset, offset + limit - 1)
        if not ids:
            return []
        records = await self.redis.mget([DEAD_LETTER_PREFIX + task_id for task_id in texts(ids)])
        return [_dead_letter(deserialize(raw)) for raw in records if raw]

    async def get(self, task_id: str) -> DeadLetter | None:
        raw = await self.redis.get(DEAD_LETTER_PREFIX + task_id)
        return _dead_letter(deserialize(raw)) if raw else None

    async def ids(self, name: str) -> list[str]:
        """The ids of every dead letter of task `name` now, the most recent first."""
        return texts(await self.redis.zrevrange(DEAD_LETTERS_BY_NAME_PREFIX + name, 0, -1))

    async def count(self, name: str | None = None) -> int:
        return int(
            await self.redis.zcard(DEAD_LETTERS_BY_NAME_PREFIX + name if name else DEAD_LETTERS_KEY)
        )

    async def count_by_name(self, names: Sequence[str]) -> dict[str, int]:
        """How many dead letters each of the task `names` has, for those that have some."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for name in names:
                pipe.zcard(DEAD_LETTERS_BY_NAME_PREFIX + name)
            counts = await pipe.execute()
        return {name: int(count) for name, count in zip(names, counts, strict=True) if count}

    async def take(self, task_id: str, *also_delete: str) -> DeadLetter | None:
        """Remove a dead letter, and the keys `also_delete` in the same transaction; the
        letter, or None when there is none (or another caller took it first)."""
        raw = await self.redis.get(DEAD_LETTER_PREFIX + task_id)
        if not raw:
            return None
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zrem(DEAD_LETTERS_KEY, task_id)
            pipe.zrem(DEAD_LETTERS_BY_NAME_PREFIX + deserialize(raw)["name"], task_id)
            pipe.delete(DEAD_LETTER_PREFIX + task_id)
            if also_delete:
                pipe.delete(*also_delete)
            removed, *_ = await pipe.execute()
        return _dead_letter(deserialize(raw)) if removed else None


def parse_dead_letter(raw: bytes | str) -> DeadLetter:
    """A dead letter from its stored record."""
    return _dead_letter(deserialize(raw))


def _dead_letter(record: dict[str, Any]) -> DeadLetter:
    return DeadLetter(
        **{
            **record,
            "enqueued_at": datetime.fromisoformat(record["enqueued_at"]),
            "failed_at": datetime.fromisoformat(record["failed_at"]),
        }
    )
