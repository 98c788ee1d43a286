"""Enqueue on commit: a task written into the outbox table in the caller's transaction.

A task enqueued straight to Redis inside a transaction runs even if the transaction then rolls
back, and a commit followed by a crash before the enqueue loses the task. Written here instead,
the task exists exactly when the transaction commits; the relay (outbox_relay.py) then moves it
to the queue under the same id, so a relay that crashes half-way and runs again enqueues
nothing twice.
"""

from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import uuid4

from sqlalchemy.ext.asyncio import AsyncSession

from .models import OutboxTask
from .serialization import serialize
from .task_context import current_meta

# Notified by a trigger when outbox rows are committed; the relay listens on it.
OUTBOX_CHANNEL = "task_outbox"


def add_to_outbox(
    session: AsyncSession,
    name: str,
    /,
    *args: Any,
    _job_id: str | None = None,
    _queue_name: str | None = None,
    _defer_by: float | timedelta | None = None,
    **kwargs: Any,
) -> str:
    """Write `name(ctx, *args, **kwargs)` into the session's transaction; returns its task id.
    Of `TaskQueue.enqueue`'s options, `_job_id`, `_queue_name` and `_defer_by` (counted from
    now) apply. The arguments must be JSON, as for any task: checked here, not at commit."""
    options = sorted(key for key in kwargs if key.startswith("_"))
    if options:
        raise TypeError(f"{', '.join(options)}: not an option of an enqueue on commit")
    try:
        serialize({"args": args, "kwargs": kwargs})
    except TypeError as exc:
        raise TypeError(f"Cannot enqueue {name}: {exc}") from exc
    if isinstance(_defer_by, (int, float)):
        _defer_by = timedelta(seconds=_defer_by)
    task_id = _job_id or uuid4().hex
    session.add(
        OutboxTask(
            task_id=task_id,
            name=name,
            queue=_queue_name,
            args=list(args),
            kwargs=kwargs,
            defer_until=datetime.now(UTC) + _defer_by if _defer_by else None,
            meta=current_meta(),
        )
    )
    return task_id
