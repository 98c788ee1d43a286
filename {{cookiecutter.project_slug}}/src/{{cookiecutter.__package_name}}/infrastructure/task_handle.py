"""One task by its id, read the way arq's `Job` reads a job: `status()`, `info()`, `result()`.

`(await get_task_pool()).job(task_id)` gives one; what it reads is `TaskQueue.state`, so it
sees what the HTTP API sees.
"""

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from .task_state import TaskState, TaskStatus

ReadState = Callable[[str], Awaitable[TaskState | None]]


class TaskFailedError(Exception):
    """`result()` of a task that failed or was aborted: its status and error."""


class TaskHandle:
    def __init__(self, task_id: str, read_state: ReadState) -> None:
        self.task_id = task_id
        self._read_state = read_state

    async def status(self) -> TaskStatus | Literal["not_found"]:
        """queued, deferred, in_progress, complete, failed or aborted; "not_found" for an id
        with no task (or one whose result has expired)."""
        state = await self._read_state(self.task_id)
        return state.status if state else "not_found"

    async def info(self) -> TaskState | None:
        """Everything `GET /api/v1/tasks/{task_id}` reports; None for an unknown id."""
        return await self._read_state(self.task_id)

    async def result(self, timeout_s: float | None = None, *, poll_delay_s: float = 0.5) -> Any:
        """Wait until the task has finished and return its result. Raises TaskFailedError if
        it failed or was aborted, LookupError for an unknown id, TimeoutError after
        `timeout_s` (None: wait as long as it takes)."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while True:
            state = await self._read_state(self.task_id)
            if state is None:
                raise LookupError(f"No task with id {self.task_id!r}.")
            if state.status == "complete":
                return state.result
            if state.finished:
                raise TaskFailedError(f"{state.name} {self.task_id} {state.status}: {state.error}")
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"{state.name} {self.task_id} is still {state.status}.")
            await asyncio.sleep(poll_delay_s)
