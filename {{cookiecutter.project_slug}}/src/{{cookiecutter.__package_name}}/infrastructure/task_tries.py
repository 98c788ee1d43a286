"""What a try does around a task's function and what is kept of its end: the try's timeout,
retries with backoff for ordinary exceptions, the check that the result is JSON, then the
try counted, the task dead-lettered or kept in the history, and its followers told."""

import asyncio
import functools
import logging
import random
import time
import traceback
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from ..settings import Settings
from .events import events_channel, task_event
from .queue import NonRetryableError, Retry, TaskQueue
from .redis import UNAVAILABLE_ERRORS
from .serialization import serialize
from .task_history import HistoryRecord, arguments_text, clip
from .task_metrics import TryOutcome

logger = logging.getLogger(__name__)
TaskFunction = Callable[..., Awaitable[Any]]


class TaskTimeoutError(Exception):
    """A try ran past its task's timeout: a failure like any other, retried up to max tries."""


def backoff_s(job_try: int, *, base_s: float, cap_s: float) -> float:
    """Exponential backoff with jitter: between half and all of base * 2^(try-1), capped at
    `cap_s`, so that tasks failing together do not all come back at the same instant."""
    delay_s = min(cap_s, base_s * 2.0 ** (job_try - 1))
    return delay_s / 2 + random.uniform(0, delay_s / 2)  # noqa: S311 - jitter, not a secret


async def within(timeout_s: float, call: Awaitable[Any], name: str) -> Any:
    """Await `call`, cancelling it after `timeout_s`: then raise TaskTimeoutError, which names
    the limit and where it is set (a TimeoutError the task raises itself goes through)."""
    try:
        async with asyncio.timeout(timeout_s) as deadline:
            return await call
    except TimeoutError:
        if not deadline.expired():
            raise
    raise TaskTimeoutError(
        f"{name} timed out after {timeout_s:g} s "
        "(its TaskSpec timeout_s, by default WORKER_JOB_TIMEOUT_S)"
    )


def with_retries(function: TaskFunction, *, max_tries: int, timeout_s: float) -> TaskFunction:
    """Turn an ordinary exception, or a try past `timeout_s`, into a retry with backoff until
    `max_tries` is reached (arq alone retries only on `Retry`, and fails a timed-out try for
    good), and refuse a result that is not JSON with a clear error."""

    @functools.wraps(function)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        started = time.monotonic()
        ctx["started_at"] = datetime.now(UTC)
        ctx["task_args"] = args, kwargs
        outcome = "failed"
        try:
            result = await within(timeout_s, function(ctx, *args, **kwargs), function.__name__)
            try:
                serialize(result)
            except TypeError as exc:
                message = f"{function.__name__} returned a bad result: {exc}"
                raise NonRetryableError(message) from exc
            outcome = "complete"
            ctx["task_result"] = result
            return result
        except Retry:
            outcome = "retried"
            raise
        except NonRetryableError:
            ctx["failure_traceback"] = traceback_summary()
            raise
        except Exception as exc:
            job_try: int = ctx["job_try"]
            if job_try >= max_tries:
                ctx["failure_traceback"] = traceback_summary()
                raise
            settings: Settings = ctx["settings"]
            delay_s = backoff_s(
                job_try,
                base_s=settings.worker_retry_delay_s,
                cap_s=settings.worker_retry_max_delay_s,
            )
            logger.warning(
                "%s try %d/%d failed (%r); retrying in %.2f s",
                ctx["job_id"], job_try, max_tries, exc, delay_s,
            )  # fmt: skip
            outcome = "retried"
            raise Retry(defer=delay_s) from exc
        except asyncio.CancelledError:
            outcome = "cancelled"
            raise
        finally:
            # Recorded with the end of the try (job_ended), in the same round trip.
            ctx["try_outcome"] = TryOutcome(function.__name__, outcome, time.monotonic() - started)

    return run


def traceback_summary(limit: int = 4_000) -> str:
    """The exception being handled, formatted, its last `limit` characters (the innermost
    frames): enough to see where a task failed, small enough to keep."""
    return traceback.format_exc()[-limit:]


async def task_ended(ctx: dict[str, Any], outcome: TryOutcome | None) -> None:
    """A try ended and arq has stored its outcome: count it, dead-letter a task that failed
    for good, keep it in the console's history, and tell followers what the task is now
    (finished, or waiting for its next try). A completed try takes one round trip: its event
    and record are built from what the worker knows."""
    tasks: TaskQueue = ctx["tasks"]
    task_id: str = ctx["job_id"]
    if outcome is not None and outcome.outcome == "complete":
        data = {"result": ctx["task_result"], "error": None, "tries": ctx["job_try"]}
        payload = serialize(task_event(task_id, "complete", ctx.get("progress"), "complete", data))
        args, kwargs = ctx["task_args"]
        record = HistoryRecord(
            task_id=task_id,
            name=outcome.task,
            queue=ctx["queue_name"],
            status="complete",
            tries=ctx["job_try"],
            enqueued_at=ctx["enqueue_time"],
            started_at=ctx["started_at"],
            finished_at=datetime.now(UTC),
            args=arguments_text(args, kwargs),
            result=clip(serialize(ctx["task_result"]).decode()),
            error=None,
            traceback=None,
        )
        ended = tasks.history.end_args(task_id, payload, record)
        await tasks.metrics_store.count_try(outcome, events_channel(task_id), payload, ended)
        return
    if outcome is not None:
        await tasks.metrics_store.count_try(outcome, "", b"")
    state = await tasks.state(task_id)
    if state is None:
        return
    traceback = ctx.get("failure_traceback")
    if state.status == "failed":
        await tasks.dead_letter(state.task_id, traceback)
    event = state.as_event()
    if not state.finished:
        event["event"] = "retrying"
    await tasks.history.try_ended(task_id, serialize(event), events_channel(task_id), traceback)


async def job_ended(ctx: dict[str, Any]) -> None:
    """Once arq has stored the outcome: count the try for /metrics and tell the task's
    followers how it ended. Neither failing ever changes the task's outcome."""
    try:
        await task_ended(ctx, ctx.get("try_outcome"))
    except UNAVAILABLE_ERRORS:
        logger.warning("could not record or publish the end of %s", ctx["job_id"])
