"""What the operator console shows beyond arq's own keys: finished tasks for
CONSOLE_HISTORY_S (arq forgets a result after WORKER_KEEP_RESULT_S), each task's timeline of
events, the tasks running now, and finished tasks per minute.

A finished task leaves one JSON record, and its id in four sorted sets scored by when it
finished (all, by status, by queue, by task name); a list filtered on several intersects them
on the server. The newest CONSOLE_HISTORY_MAX are kept, none older than CONSOLE_HISTORY_S. The
writes happen in the Lua scripts that already start and end each try: no extra round trip.
"""

import json
import time
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from arq.connections import ArqRedis
from arq.constants import result_key_prefix
from arq.jobs import JobResult, deserialize_result
from redis.asyncio.client import Pipeline

from .serialization import deserialize, serialize

HISTORY_KEY = "task:history"
RECORD_PREFIX = "task:history:record:"
TIMELINE_PREFIX = "task:timeline:"
RUNNING_KEY = "task:running"
THROUGHPUT_PREFIX = "task:throughput:"
TIMELINE_MAX = 50  # events of a task kept: each try's start and end (progress is not kept)
TEXT_MAX = 2_000  # characters kept of a task's arguments, result and error
TRACEBACK_MAX = 4_000
THROUGHPUT_TTL_S = 2 * 3600

# Lua functions for the scripts that start and end tries (worker_loop.py, task_metrics.py).
# The keys are built from their prefixes in the script: fine on one Redis server (arq cannot
# use Redis Cluster anyway).
LUA = (
    f"local HISTORY, RECORD, TIMELINE, RUNNING, THROUGHPUT = '{HISTORY_KEY}', '{RECORD_PREFIX}', "
    f"'{TIMELINE_PREFIX}', '{RUNNING_KEY}', '{THROUGHPUT_PREFIX}'\n"
    f"local TIMELINE_MAX, THROUGHPUT_TTL_S = {TIMELINE_MAX}, {THROUGHPUT_TTL_S}\n"
    + """
local function index_keys(fields)
    return { HISTORY, HISTORY .. ':status:' .. fields.status, HISTORY .. ':queue:' .. fields.queue,
        HISTORY .. ':name:' .. fields.name }
end
local function forget(id)
    local raw = redis.call('GET', RECORD .. id)
    if raw then
        for _, key in ipairs(index_keys(cjson.decode(raw))) do
            redis.call('ZREM', key, id)
        end
        redis.call('DEL', RECORD .. id)
    else
        redis.call('ZREM', HISTORY, id)
    end
end
local function note(id, entry, keep_ms)
    local key = TIMELINE .. id
    redis.call('RPUSH', key, entry)
    redis.call('LTRIM', key, -TIMELINE_MAX, -1)
    redis.call('PEXPIRE', key, keep_ms)
end
local function remember(id, record, finished_ms, keep_ms, keep_max)
    local fields = cjson.decode(record)
    forget(id)
    redis.call('SET', RECORD .. id, record)
    for _, key in ipairs(index_keys(fields)) do
        redis.call('ZADD', key, finished_ms, id)
    end
    local minute = THROUGHPUT .. math.floor(finished_ms / 60000)
    redis.call('HINCRBY', minute, fields.queue .. '|' .. fields.status, 1)
    redis.call('EXPIRE', minute, THROUGHPUT_TTL_S)
    -- The oldest go: those past CONSOLE_HISTORY_S, and past CONSOLE_HISTORY_MAX; a few at a
    -- time, as each task that finishes adds one.
    local stale = redis.call('ZRANGE', HISTORY, '-inf', finished_ms - keep_ms, 'BYSCORE',
        'LIMIT', 0, 20)
    local over = redis.call('ZCARD', HISTORY) - keep_max
    if over > 0 then
        for _, old in ipairs(redis.call('ZRANGE', HISTORY, 0, math.min(over, 20) - 1)) do
            table.insert(stale, old)
        end
    end
    for _, old in ipairs(stale) do
        forget(old)
        redis.call('DEL', TIMELINE .. old)
    end
end
local function try_ended(id, event, record, finished_ms, keep_ms, keep_max)
    redis.call('ZREM', RUNNING, id)
    if event ~= '' then
        note(id, event, keep_ms)
    end
    if record ~= '' then
        remember(id, record, finished_ms, keep_ms, keep_max)
    end
end
"""
)

# A try ended without the worker knowing the task's state (failures, aborts): recorded and
# announced in one round trip. ARGV: task id, event, channel, record, finished ms, keep ms,
# keep count.
END_SCRIPT = (
    LUA
    + """
try_ended(ARGV[1], ARGV[2], ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7]))
if ARGV[3] ~= '' then
    redis.call('PUBLISH', ARGV[3], ARGV[2])
end
return 0
"""
)

# Lists finished tasks: KEYS are the index sets to intersect. ARGV: oldest score, offset,
# count, scratch key. Returns the total, then the records of the page.
PAGE_SCRIPT = (
    f"local RECORD = '{RECORD_PREFIX}'\n"
    + """
local source = KEYS[1]
if table.getn(KEYS) > 1 then
    redis.call('ZINTERSTORE', ARGV[4], table.getn(KEYS), unpack(KEYS))
    source = ARGV[4]
end
local total = redis.call('ZCOUNT', source, ARGV[1], '+inf')
local ids = redis.call('ZRANGE', source, '+inf', ARGV[1], 'BYSCORE', 'REV', 'LIMIT', ARGV[2],
    ARGV[3])
if source ~= KEYS[1] then
    redis.call('DEL', source)
end
local records = {}
for i, id in ipairs(ids) do
    records[i] = redis.call('GET', RECORD .. id) or ''
end
return { total, records }
"""
)


@dataclass(frozen=True)
class HistoryRecord:
    """A finished task as the console lists it."""

    task_id: str
    name: str
    queue: str
    status: str
    tries: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime
    args: str
    result: str | None
    error: str | None
    traceback: str | None

    def dump(self) -> bytes:
        return json.dumps(
            {
                **self.__dict__,
                "enqueued_at": _epoch(self.enqueued_at),
                "started_at": _epoch(self.started_at),
                "finished_at": _epoch(self.finished_at),
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def load(cls, raw: bytes | str) -> "HistoryRecord":
        fields: dict[str, Any] = json.loads(raw)
        for name in ("enqueued_at", "started_at", "finished_at"):
            stamp = fields[name]
            fields[name] = None if stamp is None else datetime.fromtimestamp(stamp, UTC)
        return cls(**fields)

    @classmethod
    def from_result(
        cls, task_id: str, result: JobResult, status: str, traceback: str | None
    ) -> "HistoryRecord":
        return cls(
            task_id=task_id,
            name=result.function,
            queue=result.queue_name,
            status=status,
            tries=result.job_try,
            enqueued_at=result.enqueue_time,
            started_at=result.start_time,
            finished_at=result.finish_time,
            args=arguments_text(result.args, result.kwargs),
            result=clip(serialize(result.result).decode()) if result.success else None,
            error=None if result.success else clip(str(result.result) or status),
            traceback=traceback[-TRACEBACK_MAX:] if traceback else None,
        )


@dataclass(frozen=True)
class HistoryPage:
    total: int
    records: list[HistoryRecord]


class TaskHistory:
    """Finished tasks, timelines and throughput, as the scripts of the tries wrote them."""

    def __init__(self, redis: ArqRedis, *, keep_s: float, keep_max: int) -> None:
        self.redis = redis
        self.keep_ms = int(keep_s * 1000)
        self.keep_max = keep_max
        self._end = redis.register_script(END_SCRIPT)
        self._page = redis.register_script(PAGE_SCRIPT)

    def end_args(self, task_id: str, event: bytes, record: HistoryRecord | None) -> list[Any]:
        """The part of a script's arguments that `try_ended` takes, in its order."""
        finished_ms = int(record.finished_at.timestamp() * 1000) if record else 0
        return [
            task_id,
            event,
            record.dump() if record else b"",
            finished_ms,
            self.keep_ms,
            self.keep_max,
        ]

    async def remember(self, finished: Sequence[tuple[HistoryRecord, list[bytes]]]) -> None:
        """Keep finished tasks with their timelines (the last event ends it) in one round
        trip, as the workers would have: for imports and `just bench`."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for record, (*earlier, last) in finished:
                for event in earlier:
                    note_in_timeline(pipe, record.task_id, event, keep_s=self.keep_ms / 1000)
                task_id, *rest = self.end_args(record.task_id, last, record)
                await self._end(args=[task_id, rest[0], "", *rest[1:]], client=pipe)
            await pipe.execute()

    async def try_ended(
        self, task_id: str, event: bytes, channel: str, traceback: str | None = None
    ) -> None:
        """Note the end of a try in the task's timeline and, if its stored result says it
        finished, keep its record; publish `event` on `channel` in the same round trip."""
        record = None
        result_raw = await self.redis.get(result_key_prefix + task_id)
        if result_raw:
            result = deserialize_result(cast(bytes, result_raw), deserializer=deserialize)
            status = json.loads(event)["status"]
            record = HistoryRecord.from_result(task_id, result, status, traceback)
        task_id_, event_, record_, *rest = self.end_args(task_id, event, record)
        await self._end(args=[task_id_, event_, channel, record_, *rest], client=self.redis)

    async def page(
        self,
        *,
        status: str | None,
        name: str | None,
        queue: str | None,
        limit: int,
        offset: int,
    ) -> HistoryPage:
        """Finished tasks matching every filter given, the newest first."""
        filters = {"status": status, "name": name, "queue": queue}
        keys = [f"{HISTORY_KEY}:{kind}:{value}" for kind, value in filters.items() if value]
        oldest_ms = int(time.time() * 1000) - self.keep_ms
        args: list[str | int] = [oldest_ms, offset, limit, f"{HISTORY_KEY}:scratch"]
        total, raws = await self._page(keys=keys or [HISTORY_KEY], args=args, client=self.redis)
        return HistoryPage(int(total), [HistoryRecord.load(raw) for raw in raws if raw])

    async def record(self, task_id: str) -> HistoryRecord | None:
        raw = await self.redis.get(RECORD_PREFIX + task_id)
        return HistoryRecord.load(raw) if raw else None

    async def timeline(self, task_id: str) -> list[dict[str, Any]]:
        """The task's events, oldest first: each start, each retry, the end."""
        entries = await cast(
            Awaitable[list[bytes]], self.redis.lrange(TIMELINE_PREFIX + task_id, 0, -1)
        )
        return [json.loads(raw) for raw in entries]

    async def throughput(
        self, queues: Sequence[str], *, minutes: int, until: datetime
    ) -> list[dict[str, int]]:
        """Finished tasks per minute over the `minutes` up to the one of `until`, oldest
        first: per minute, counts by "queue|status"."""
        now_minute = int(until.timestamp() // 60)
        async with self.redis.pipeline(transaction=False) as pipe:
            for minute in range(now_minute - minutes + 1, now_minute + 1):
                pipe.hgetall(f"{THROUGHPUT_PREFIX}{minute}")
            replies: list[dict[bytes, bytes]] = await pipe.execute()
        return [{key.decode(): int(value) for key, value in reply.items()} for reply in replies]


def note_in_timeline(pipe: Pipeline, task_id: str, event: bytes, *, keep_s: float) -> None:
    """Add `event` to the task's timeline, as part of `pipe`."""
    key = TIMELINE_PREFIX + task_id
    pipe.rpush(key, event)
    pipe.ltrim(key, -TIMELINE_MAX, -1)
    pipe.pexpire(key, int(keep_s * 1000))


def arguments_text(args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """A task's arguments as short JSON, for people to read."""
    return clip(serialize({"args": list(args), "kwargs": kwargs} if args else kwargs).decode())


def clip(text: str, limit: int = TEXT_MAX) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _epoch(moment: datetime | None) -> float | None:
    return None if moment is None else moment.timestamp()
