"""Submitting, following and cancelling tasks on behalf of API clients."""

import asyncio
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from ..access import SUBMIT, SUBMIT_ONE_PREFIX, FollowTokens, Principal
from ..infrastructure.dead_letters import DeadLetter
from ..infrastructure.enqueue_script import SubmissionRate
from ..infrastructure.events import TaskEvent, TaskEventHub
from ..infrastructure.queue import TaskQueue
from ..infrastructure.serialization import deserialize
from ..infrastructure.task_state import FINISHED, TaskState
from ..settings import Settings
from ..tasks.registry import API_TASKS


class UnknownTaskError(LookupError):
    def __init__(self, name: str) -> None:
        choices = ", ".join(sorted(API_TASKS)) or "none"
        super().__init__(f"Unknown task {name!r}: the API accepts {choices}.")


class MissingScopeError(PermissionError):
    def __init__(self, scope: str) -> None:
        super().__init__(f"This needs the scope {scope}.")
        self.scope = scope


class InvalidTaskArgsError(ValueError):
    def __init__(self, errors: list[ErrorDetails]) -> None:
        super().__init__("The task's arguments are invalid.")
        self.errors = errors


class DeferTooLongError(ValueError):
    def __init__(self, max_defer_s: float) -> None:
        super().__init__(f"defer_by may be at most {max_defer_s:g} seconds.")


class DuplicateTaskError(Exception):
    def __init__(self, task_id: str) -> None:
        super().__init__(
            f"You already have a task with id {task_id!r} (queued, running, or finished with "
            "its result still kept): choose another id, or read its status."
        )


class TaskNotFoundError(LookupError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"No task with id {task_id!r}.")


class TaskFinishedError(Exception):
    def __init__(self, task_id: str, status: str) -> None:
        super().__init__(f"Task {task_id!r} has already finished ({status}).")


class NotDeadLetteredError(LookupError):
    def __init__(self, task_id: str) -> None:
        super().__init__(f"Task {task_id!r} is not among the tasks that failed for good.")


@dataclass(frozen=True)
class Submitted:
    task_id: str
    status: Literal["queued", "deferred"]
    follow_token: str  # lets whoever holds it follow this task's events for a while


class TaskService:
    """The allow-list and its argument models stand between clients and the queue."""

    def __init__(
        self,
        queue: TaskQueue,
        events: TaskEventHub,
        settings: Settings,
        follow_tokens: FollowTokens,
    ) -> None:
        self._queue = queue
        self._events = events
        self._settings = settings
        self._follow_tokens = follow_tokens

    async def submit(
        self,
        principal: Principal,
        name: str,
        args: dict[str, Any],
        *,
        defer_by_s: float | None,
        task_id: str | None,
    ) -> Submitted:
        """Enqueue `name` for `principal`, under an id of its own: its tag, then `task_id`
        (or a random one), so that ids chosen by different principals never meet."""
        if not principal.can_submit_any():
            raise MissingScopeError(SUBMIT)
        spec = API_TASKS.get(name)
        if spec is None or spec.args_model is None:
            raise UnknownTaskError(name)
        if not principal.can_submit(name, sensitive=spec.sensitive):
            raise MissingScopeError(SUBMIT_ONE_PREFIX + name if spec.sensitive else SUBMIT)
        try:
            context = {"settings": self._settings}  # for checks that depend on the settings
            arguments = spec.args_model.model_validate(args, context=context).model_dump(
                mode="json"
            )
        except ValidationError as exc:
            raise InvalidTaskArgsError(
                exc.errors(include_url=False, include_context=False, include_input=False)
            ) from exc
        if defer_by_s is not None and defer_by_s > self._settings.task_max_defer_s:
            raise DeferTooLongError(self._settings.task_max_defer_s)
        settings = self._settings
        queue = settings.slow_task_queue if spec.queue == "slow" else settings.task_queue
        options: dict[str, Any] = {
            "_job_id": principal.task_id(task_id),
            "_queue_name": queue,
            "_max_depth": settings.task_max_queue_depth,
        }
        if settings.task_submit_rate_limit:
            options["_rate"] = SubmissionRate(
                principal.tag, settings.task_submit_rate_limit, settings.task_submit_rate_window_s
            )
        if defer_by_s:
            options["_defer_by"] = defer_by_s
        new_id = await self._queue.enqueue(name, **arguments, **options)
        if new_id is None:
            raise DuplicateTaskError(task_id or "")
        status: Literal["queued", "deferred"] = "deferred" if defer_by_s else "queued"
        return Submitted(new_id, status, self._follow_tokens.sign(new_id))

    async def state(self, task_id: str) -> TaskState:
        state = await self._queue.state(task_id)
        if state is None:
            raise TaskNotFoundError(task_id)
        return state

    async def cancel(self, task_id: str) -> str:
        """Abort a task that has not finished; returns "aborted" or "aborting"."""
        state = await self.state(task_id)
        if state.status in FINISHED:
            raise TaskFinishedError(task_id, state.status)
        return await self._queue.abort(task_id)

    async def dead_letters(self, *, limit: int, offset: int) -> list[DeadLetter]:
        return await self._queue.dead_letters(limit=limit, offset=offset)

    async def retry(self, task_id: str) -> Submitted:
        """Enqueue a task that failed for good again, under its id."""
        if not await self._queue.retry(task_id):
            raise NotDeadLetteredError(task_id)
        return Submitted(task_id, "queued", self._follow_tokens.sign(task_id))

    async def follow(self, task_id: str) -> AsyncGenerator[TaskEvent | None]:
        """The task's events, ending with its terminal one: its current state first, then
        what its worker publishes. When no event comes for TASK_EVENTS_RECHECK_S, the stored
        state is read again (an event lost to a crash or a reconnect is never waited on) and,
        if nothing changed, None is yielded: a chance to send a keep-alive."""
        recheck_s = self._settings.task_events_recheck_s
        async with self._events.subscribe(task_id) as inbox:
            state = await self._queue.state(task_id)
            if state is None:
                return
            yield state.as_event()
            last = (state.status, state.progress)
            while last[0] not in FINISHED:
                try:
                    raw = await asyncio.wait_for(inbox.get(), recheck_s)
                except TimeoutError:
                    state = await self._queue.state(task_id)
                    if state is None:
                        return
                    if (state.status, state.progress) == last:
                        yield None
                        continue
                    event = state.as_event()
                else:
                    event = deserialize(raw)
                yield event
                last = (event["status"], event["progress"])
