"""Background tasks over HTTP: submit, follow, cancel."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from ..access import CANCEL, OPERATOR, READ, Principal
from ..infrastructure.task_state import TaskStatus
from ..services.tasks import (
    DeferTooLongError,
    DuplicateTaskError,
    InvalidTaskArgsError,
    MissingScopeError,
    NotDeadLetteredError,
    Submitted,
    TaskFinishedError,
    TaskNotFoundError,
    UnknownTaskError,
)
from .auth import Authenticated, check_visible, forbidden, require
from .deps import TaskServiceDep

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])
UNPROCESSABLE = 422
# Ids clients choose; the service puts the submitter's tag before them (see access.py).
CHOSEN_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,191}$"
TaskId = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="The task's id")]
Reader = Annotated[Principal, Depends(require(READ))]
Canceller = Annotated[Principal, Depends(require(CANCEL))]
Operator = Depends(require(OPERATOR))


class TaskSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="A task the API accepts")
    args: dict[str, Any] = Field(default_factory=dict, description="Checked by the task's model")
    defer_by: float | None = Field(default=None, ge=0, description="Seconds to wait before it runs")
    task_id: str | None = Field(
        default=None,
        pattern=CHOSEN_ID_PATTERN,
        description="Your id, to make the submission idempotent (the task's id starts with "
        "a tag of yours, then this)",
    )


class TaskAccepted(BaseModel):
    task_id: str
    status: Literal["queued", "deferred"]
    status_url: str
    events_url: str = Field(description="Server-Sent Events; its token allows this task only")
    ws_url: str = Field(description="The WebSocket's path; its token allows this task only")

    @classmethod
    def of(cls, submitted: Submitted) -> "TaskAccepted":
        url = status_url(submitted.task_id)
        token = submitted.follow_token
        return cls(
            task_id=submitted.task_id,
            status=submitted.status,
            status_url=url,
            events_url=f"{url}/events?token={token}",
            ws_url=f"{url}/ws?token={token}",
        )


class TaskOut(BaseModel):
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


class DeadLetterOut(BaseModel):
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


class TaskCancelled(BaseModel):
    task_id: str
    status: Literal["aborted", "aborting"]


def status_url(task_id: str) -> str:
    """Where `get_task` answers for this id (ids hold only URL-safe characters). Built by hand:
    `url_path_for` searches every route, on the path of every submission."""
    return f"{router.prefix}/{task_id}"


def problem(code: int, detail: Any) -> dict[int | str, dict[str, Any]]:
    return {code: {"description": detail}}


UNAUTHORIZED = problem(401, "No API key, or an unknown one")
FORBIDDEN = problem(403, "The API key lacks the scope")
NOT_FOUND = problem(404, "No task with this id (another principal's tasks included)")


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **UNAUTHORIZED,
        **problem(403, "The API key lacks tasks:submit (or tasks:submit:<name>)"),
        **problem(409, "You already have a task with this task_id"),
        **problem(413, "The request body is too large"),
        **problem(422, "Unknown task, or arguments its model refuses"),
        **problem(429, "Past your submission rate (TASK_SUBMIT_RATE_LIMIT); see Retry-After"),
        **problem(503, "The queue is unreachable, or full (TASK_MAX_QUEUE_DEPTH); retry later"),
    },
)
async def submit_task(
    submission: TaskSubmission,
    tasks: TaskServiceDep,
    principal: Authenticated,
    response: Response,
) -> TaskAccepted:
    """Queue a task; answers at once with where to follow it."""
    try:
        submitted = await tasks.submit(
            principal,
            submission.name,
            submission.args,
            defer_by_s=submission.defer_by,
            task_id=submission.task_id,
        )
    except MissingScopeError as exc:
        raise forbidden(exc.scope) from exc
    except UnknownTaskError as exc:
        raise HTTPException(UNPROCESSABLE, str(exc)) from exc
    except InvalidTaskArgsError as exc:
        detail = [{**error, "loc": ["body", "args", *error["loc"]]} for error in exc.errors]
        raise HTTPException(UNPROCESSABLE, detail) from exc
    except DeferTooLongError as exc:
        raise HTTPException(UNPROCESSABLE, str(exc)) from exc
    except DuplicateTaskError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    accepted = TaskAccepted.of(submitted)
    response.headers["Location"] = accepted.status_url
    return accepted


@router.get("/{task_id}", responses={**UNAUTHORIZED, **FORBIDDEN, **NOT_FOUND})
async def get_task(task_id: TaskId, tasks: TaskServiceDep, principal: Reader) -> TaskOut:
    """The task's status, progress (0-100), result or error, tries and times."""
    try:
        check_visible(principal, task_id)
        state = await tasks.state(task_id)
    except TaskNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return TaskOut(**vars(state))


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **UNAUTHORIZED,
        **FORBIDDEN,
        **NOT_FOUND,
        **problem(409, "Already finished"),
    },
)
async def cancel_task(
    task_id: TaskId, tasks: TaskServiceDep, principal: Canceller
) -> TaskCancelled:
    """Abort a task: a queued or deferred one never runs ("aborted"); a running one is
    cancelled by its worker ("aborting", then "aborted" in its status)."""
    try:
        check_visible(principal, task_id)
        outcome = await tasks.cancel(task_id)
    except TaskNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except TaskFinishedError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return TaskCancelled(task_id=task_id, status="aborted" if outcome == "aborted" else "aborting")


@router.get("", dependencies=[Operator], responses={**UNAUTHORIZED, **FORBIDDEN})
async def list_failed_tasks(
    tasks: TaskServiceDep,
    status_filter: Annotated[
        Literal["failed"], Query(alias="status", description="`failed`: the dead-letter list")
    ],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[DeadLetterOut]:
    """Tasks that failed for good (tries exhausted, or a non-retryable error), the most recent
    first, with their arguments, error and traceback; kept until retried. Operators only."""
    letters = await tasks.dead_letters(limit=limit, offset=offset)
    return [DeadLetterOut(**vars(letter)) for letter in letters]


@router.post(
    "/{task_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[Operator],
    responses={
        **UNAUTHORIZED,
        **FORBIDDEN,
        **problem(404, "Not among the tasks that failed for good"),
    },
)
async def retry_task(task_id: TaskId, tasks: TaskServiceDep, response: Response) -> TaskAccepted:
    """Enqueue a dead-lettered task again, under the same id and with the same arguments.
    Operators only."""
    try:
        submitted = await tasks.retry(task_id)
    except NotDeadLetteredError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    accepted = TaskAccepted.of(submitted)
    response.headers["Location"] = accepted.status_url
    return accepted
