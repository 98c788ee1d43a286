"""What a task is now (queued, running, finished...), read from the keys arq and our workers
keep in Redis, and told to followers as an event."""

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from arq.connections import ArqRedis
from arq.constants import (
    in_progress_key_prefix,
    job_key_prefix,
    result_key_prefix,
    retry_key_prefix,
)
from arq.jobs import JobDef, SerializationError, deserialize_job, deserialize_result

from .events import TaskEvent, task_event
from .serialization import deserialize
from .task_history import RUNNING_KEY

TaskStatus = Literal["queued", "deferred", "in_progress", "complete", "failed", "aborted"]
FINISHED: frozenset[TaskStatus] = frozenset({"complete", "failed", "aborted"})
PROGRESS_KEY_PREFIX = "task:progress:"
UNREADABLE = "<unreadable>"


@dataclass(frozen=True)
class TaskState:
    """What `GET /api/v1/tasks/{task_id}` reports."""

    task_id: str
    name: str
    status: TaskStatus
    progress: int | None
    result: Any
    error: str | None
    tries: int
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def finished(self) -> bool:
        return self.status in FINISHED

    def as_event(self) -> TaskEvent:
        """The state as an event: named after the status once finished, with the result or
        error; "state" before that."""
        if self.finished:
            data = {"result": self.result, "error": self.error, "tries": self.tries}
            return task_event(self.task_id, self.status, self.progress, self.status, data)
        return task_event(self.task_id, self.status, self.progress, "state", {"tries": self.tries})


async def read_task_state(redis: ArqRedis, queues: Sequence[str], task_id: str) -> TaskState | None:
    """The task's status, progress, result and times, in one round trip; None for an unknown
    id. `queues` are those the task may wait on."""
    async with redis.pipeline(transaction=True) as pipe:
        pipe.get(result_key_prefix + task_id)
        pipe.exists(in_progress_key_prefix + task_id)
        pipe.get(job_key_prefix + task_id)
        pipe.get(retry_key_prefix + task_id)
        pipe.get(PROGRESS_KEY_PREFIX + task_id)
        pipe.zscore(RUNNING_KEY, task_id)
        for queue in queues:
            pipe.zscore(queue, task_id)
        replies = await pipe.execute()
    result_raw, running, job_raw, tries_raw, progress_raw, started_ms, *scores = replies
    progress = deserialize(progress_raw)["progress"] if progress_raw else None
    if result_raw:
        result = deserialize_result(result_raw, deserializer=deserialize)
        failure = None if result.success else result.result
        status: TaskStatus = "complete"
        if isinstance(failure, asyncio.CancelledError):
            status = "aborted"
        elif failure is not None:
            status = "failed"
        return TaskState(
            task_id=task_id,
            name=result.function,
            status=status,
            progress=progress,
            result=result.result if result.success else None,
            error=None if failure is None else str(failure) or status,
            tries=result.job_try,
            enqueued_at=result.enqueue_time,
            started_at=result.start_time if result.job_try else None,  # None: never ran
            finished_at=result.finish_time,
        )
    if not job_raw:
        return None
    job = readable_job(job_raw)
    name, enqueued_at = (job.function, job.enqueue_time) if job else (UNREADABLE, None)
    score = next((score for score in scores if score is not None), None)
    if running:
        status = "in_progress"
    elif score is not None and score > time.time() * 1000:
        status = "deferred"
    else:
        status = "queued"
    return TaskState(
        task_id=task_id,
        name=name,
        status=status,
        progress=progress,
        result=None,
        error=None,
        tries=int(tries_raw or 0),
        enqueued_at=enqueued_at,
        # The current try's start, as its claim noted it for the console.
        started_at=datetime.fromtimestamp(started_ms / 1000, UTC)
        if running and started_ms
        else None,
        finished_at=None,
    )


def readable_job(job_raw: bytes) -> JobDef | None:
    """The job of a queued payload; None when this service did not write it (a worker will
    fail it)."""
    try:
        return deserialize_job(job_raw, deserializer=deserialize)
    except SerializationError:
        return None
