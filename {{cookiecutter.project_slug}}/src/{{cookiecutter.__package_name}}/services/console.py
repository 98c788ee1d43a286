"""What the operator console shows and does: queues, workers, cron jobs, tasks in every state,
dead letters, and the operators' actions on them, each logged with who took it."""

import logging
from collections.abc import AsyncGenerator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from ..infrastructure.dead_letters import DeadLetter
from ..infrastructure.events import task_changes
from ..infrastructure.live_tasks import LiveTasks, next_run
from ..infrastructure.queue import TaskQueue, wake_channel
from ..infrastructure.task_history import HistoryRecord
from ..infrastructure.task_metrics import WorkerInfo
from ..infrastructure.task_state import FINISHED
from ..settings import Settings
from ..tasks.registry import CRONS, TASKS
from .task_lists import PAGE_SIZE, ListStatus, Page, TaskLists, TaskRow

logger = logging.getLogger(__name__)
CHART_MINUTES = 60


@dataclass(frozen=True)
class QueueSummary:
    queue: str
    label: str
    queued: int
    deferred: int
    running: int
    finished_last_hour: int
    failed_last_hour: int


@dataclass(frozen=True)
class CronSummary:
    name: str
    next_run: datetime
    last: HistoryRecord | None


@dataclass(frozen=True)
class MinuteCount:
    at: datetime  # the minute's start
    finished: int


@dataclass(frozen=True)
class Overview:
    queues: list[QueueSummary]
    per_minute: list[MinuteCount]  # the last CHART_MINUTES minutes, oldest first
    workers: list[WorkerInfo]
    crons: list[CronSummary]
    dead_letters: int


@dataclass(frozen=True)
class TaskDetail:
    task_id: str
    name: str
    queue: str | None
    status: str
    owner: str
    tries: int
    progress: int | None
    args: str | None
    result: str | None
    error: str | None
    traceback: str | None
    enqueued_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None
    timeline: list[dict[str, object]]
    dead_letter: bool

    @property
    def finished(self) -> bool:
        return self.status in FINISHED


class ConsoleService:
    def __init__(self, queue: TaskQueue, settings: Settings, owners: Mapping[str, str]) -> None:
        self._queue = queue
        self._settings = settings
        self._owners = owners  # principal names by their tag
        self._live = LiveTasks(queue.pool, queue.queues)
        self.labels = {settings.task_queue: "default", settings.slow_task_queue: "slow"}
        self._lists = TaskLists(self._live, queue.history, self.owner)

    async def overview(self) -> Overview:
        counts = await self._live.counts()
        now = datetime.now(UTC)
        minutes = await self._queue.history.throughput(
            self._queue.queues, minutes=CHART_MINUTES, until=now
        )
        alive_s = 2 * self._settings.worker_health_check_interval_s + 1
        first_minute = now.replace(second=0, microsecond=0) - timedelta(minutes=CHART_MINUTES - 1)
        crons = []
        for spec in CRONS:
            last = await self._queue.history.page(
                status=None, name=spec.name, queue=None, limit=1, offset=0
            )
            latest = last.records[0] if last.records else None
            crons.append(CronSummary(spec.name, next_run(spec, now), latest))
        queues = [
            QueueSummary(
                queue=queue,
                label=self.labels.get(queue, queue),
                queued=counts[queue].queued,
                deferred=counts[queue].deferred,
                running=counts[queue].running,
                finished_last_hour=sum(
                    count
                    for minute in minutes
                    for key, count in minute.items()
                    if key.startswith(queue + "|")
                ),
                failed_last_hour=sum(minute.get(queue + "|failed", 0) for minute in minutes),
            )
            for queue in self._queue.queues
        ]
        return Overview(
            queues=queues,
            per_minute=[
                MinuteCount(first_minute + timedelta(minutes=i), sum(minute.values()))
                for i, minute in enumerate(minutes)
            ],
            workers=await self._queue.metrics_store.workers(self._queue.queues, alive_s=alive_s),
            crons=crons,
            dead_letters=await self._queue.dead_letter_store.count(),
        )

    async def tasks(
        self, status: ListStatus, *, name: str | None, queue: str | None, page: int
    ) -> Page[TaskRow]:
        """One page of tasks of `status` ("recent": of every state), filtered by task name
        and queue."""
        return await self._lists.page(status, name=name, queue=queue, page=page)

    async def task(self, task_id: str) -> TaskDetail | None:
        """Everything known of a task: its state, arguments, result or failure, timeline.
        arq keeps a result for WORKER_KEEP_RESULT_S, the console's record for longer."""
        state = await self._queue.state(task_id)
        record = await self._queue.history.record(task_id)
        letter = await self._queue.dead_letter_store.get(task_id)
        timeline = await self._queue.history.timeline(task_id)
        if record is not None and (state is None or state.finished):
            return TaskDetail(
                task_id=task_id,
                owner=self.owner(task_id),
                timeline=timeline,
                name=record.name,
                queue=record.queue,
                status=record.status,
                tries=record.tries,
                progress=state.progress if state else None,
                args=record.args,
                result=record.result,
                error=record.error,
                traceback=letter.traceback if letter else record.traceback,
                enqueued_at=record.enqueued_at,
                started_at=record.started_at,
                finished_at=record.finished_at,
                dead_letter=letter is not None,
            )
        if state is None:
            return None
        live = await self._live.task(task_id)
        return TaskDetail(
            task_id=task_id,
            owner=self.owner(task_id),
            timeline=timeline,
            name=state.name,
            queue=live.queue if live else None,
            status=state.status,
            tries=state.tries,
            progress=state.progress,
            args=live.args if live else None,
            result=None,
            error=state.error,
            traceback=letter.traceback if letter else None,
            enqueued_at=state.enqueued_at,
            started_at=state.started_at,
            finished_at=state.finished_at,
            dead_letter=letter is not None,
        )

    async def dead_letters(self, *, name: str | None, page: int) -> Page[DeadLetter]:
        store = self._queue.dead_letter_store
        letters = await store.newest(limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE, name=name)
        return Page(letters, page, await store.count(name))

    async def dead_letter_names(self) -> dict[str, int]:
        """Dead letters by task name, for the names that have some."""
        return await self._queue.dead_letter_store.count_by_name([spec.name for spec in TASKS])

    async def abort(self, task_id: str, operator: str) -> str | None:
        """Abort a task that has not finished: "aborted", "aborting", or None when it had
        finished (or is unknown)."""
        state = await self._queue.state(task_id)
        if state is None or state.finished:
            return None
        outcome = await self._queue.abort(task_id)
        logger.info("console: %s aborted task %s (%s)", operator, task_id, outcome)
        return outcome

    async def retry_dead_letter(self, task_id: str, operator: str) -> bool:
        retried = await self._queue.retry(task_id)
        if retried:
            logger.info("console: %s retried dead letter %s", operator, task_id)
        return retried

    async def delete_dead_letter(self, task_id: str, operator: str) -> bool:
        deleted = await self._queue.dead_letter_store.take(task_id) is not None
        if deleted:
            logger.info("console: %s deleted dead letter %s", operator, task_id)
        return deleted

    async def bulk(self, action: Literal["retry", "delete"], name: str, operator: str) -> int:
        """Retry or delete every dead letter of task `name`; how many were."""
        store, done = self._queue.dead_letter_store, 0
        # The letters present now: a retried task that fails again at once, or a letter whose
        # retry is refused, is not acted on twice, and the action ends.
        for task_id in await store.ids(name):
            if action == "retry":
                done += await self._queue.retry(task_id)
            else:
                done += await store.take(task_id) is not None
        letters = "dead letter" if done == 1 else "dead letters"
        logger.info("console: %s %s %d %s of %s", operator, action + "d", done, letters, name)
        return done

    def changes(self) -> AsyncGenerator[set[str]]:
        """Batches of changed task ids, for the pages' live updates (see `task_changes`)."""
        channels = [wake_channel(queue) for queue in self._queue.queues]
        return task_changes(self._queue.pool, channels, batch_s=0.5, idle_s=15.0)

    def owner(self, task_id: str) -> str:
        """Who submitted the task: its principal's name when this process knows it, else its
        tag; "-" for tasks without one (cron jobs, scripts)."""
        tag, dot, _ = task_id.partition(".")
        return self._owners.get(tag, tag) if dot else "-"
