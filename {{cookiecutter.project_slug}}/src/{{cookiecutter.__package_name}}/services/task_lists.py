"""The console's lists of tasks: those of one state, or every recent one whatever its state,
a page at a time; each row says how many tries it took, when it started and for how long."""

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
{% if cookiecutter.python_version == "3.11" -%}
from typing import Generic, Literal, TypeVar, get_args
{%- else -%}
from typing import Literal, get_args
{%- endif %}

from ..infrastructure.live_tasks import LiveStatus, LiveTask, LiveTasks
from ..infrastructure.task_history import HistoryRecord, TaskHistory
from ..infrastructure.task_state import FINISHED

ListStatus = Literal["recent", "queued", "deferred", "in_progress", "complete", "failed", "aborted"]
LIST_STATUSES: tuple[ListStatus, ...] = get_args(ListStatus)
PAGE_SIZE = 50
LIVE_STATUSES: dict[str, LiveStatus] = {
    "queued": "queued",
    "deferred": "deferred",
    "in_progress": "in_progress",
}
{%- if cookiecutter.python_version == "3.11" %}
Row = TypeVar("Row")
{%- endif %}


@dataclass(frozen=True)
{% if cookiecutter.python_version == "3.11" -%}
class Page(Generic[Row]):
{%- else -%}
class Page[Row]:
{%- endif %}
    rows: list[Row]
    number: int
    total: int
    partial: bool = False

    @property
    def pages(self) -> int:
        return max(1, math.ceil(self.total / PAGE_SIZE))


@dataclass(frozen=True)
class TaskRow:
    task_id: str
    name: str
    queue: str
    status: str
    tries: int
    owner: str
    enqueued_at: datetime | None
    due_at: datetime | None  # waiting tasks only
    started_at: datetime | None  # the running try's start, or the last try's
    finished_at: datetime | None
    error: str | None

    @property
    def duration_s(self) -> float | None:
        """How long its last try took, or has run so far; None if it never started."""
        if self.started_at is None:
            return None
        end = self.finished_at or datetime.now(UTC)
        return max(0.0, (end - self.started_at).total_seconds())

    @property
    def changed_at(self) -> datetime:
        """When the task last moved: finished, started, or became due."""
        moments = (self.finished_at, self.started_at, self.due_at, self.enqueued_at)
        return next((moment for moment in moments if moment), datetime.min.replace(tzinfo=UTC))


class TaskLists:
    def __init__(self, live: LiveTasks, history: TaskHistory, owner: Callable[[str], str]) -> None:
        self._live = live
        self._history = history
        self._owner = owner  # who submitted a task, from its id

    async def page(
        self, status: ListStatus, *, name: str | None, queue: str | None, page: int
    ) -> Page[TaskRow]:
        """One page of tasks of `status`, filtered by task name and queue."""
        if status == "recent":
            return await self._recent(name=name, queue=queue, page=page)
        offset = (page - 1) * PAGE_SIZE
        if status in FINISHED:
            history = await self._history.page(
                status=status, name=name, queue=queue, limit=PAGE_SIZE, offset=offset
            )
            return Page([self._finished(record) for record in history.records], page, history.total)
        live = await self._live.page(
            LIVE_STATUSES[status], name=name, queue=queue, limit=PAGE_SIZE, offset=offset
        )
        rows = [self._unfinished(task) for task in live.tasks]
        return Page(rows, page, live.total, live.partial)

    async def _recent(self, *, name: str | None, queue: str | None, page: int) -> Page[TaskRow]:
        """Tasks due, running and finished, the one that moved last first. Tasks deferred to
        a later time have not moved yet: they stay in their own list."""
        end = page * PAGE_SIZE
        waiting = await self._live.page("queued", name=name, queue=queue, limit=end, offset=0)
        running = await self._live.page("in_progress", name=name, queue=queue, limit=end, offset=0)
        finished = await self._history.page(
            status=None, name=name, queue=queue, limit=end, offset=0
        )
        read = [
            *(self._unfinished(task) for task in [*waiting.tasks, *running.tasks]),
            *(self._finished(record) for record in finished.records),
        ]
        # Read in the order a task moves: one that moved on meanwhile keeps its newer row.
        rows = {row.task_id: row for row in read}
        latest = sorted(rows.values(), key=lambda row: row.changed_at, reverse=True)
        total = waiting.total + running.total + finished.total - (len(read) - len(rows))
        return Page(latest[end - PAGE_SIZE : end], page, total, waiting.partial)

    def _unfinished(self, task: LiveTask) -> TaskRow:
        running = task.status == "in_progress"
        return TaskRow(
            task_id=task.task_id,
            name=task.name,
            queue=task.queue,
            status=task.status,
            tries=task.tries,
            owner=self._owner(task.task_id),
            enqueued_at=task.enqueued_at,
            due_at=None if running else task.at,
            started_at=task.at if running else None,
            finished_at=None,
            error=None,
        )

    def _finished(self, record: HistoryRecord) -> TaskRow:
        return TaskRow(
            task_id=record.task_id,
            name=record.name,
            queue=record.queue,
            status=record.status,
            tries=record.tries,
            owner=self._owner(record.task_id),
            enqueued_at=record.enqueued_at,
            due_at=None,
            started_at=record.started_at,
            finished_at=record.finished_at,
            error=record.error,
        )
