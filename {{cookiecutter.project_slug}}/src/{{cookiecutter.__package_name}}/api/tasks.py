"""Background tasks over HTTP: submit, follow, cancel."""

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, HTTPException, Path, Query, Response, status
from pydantic import BaseModel, ConfigDict, Field

from ..infrastructure.task_state import TaskStatus
from ..services.tasks import (
    DeferTooLongError,
    DuplicateTaskError,
    InvalidTaskArgsError,
    NotDeadLetteredError,
    TaskFinishedError,
    TaskNotFoundError,
    UnknownTaskError,
)
from .deps import OperatorDep, TaskServiceDep

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])
UNPROCESSABLE = 422
TASK_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$"
TaskId = Annotated[str, Path(pattern=TASK_ID_PATTERN, description="The task's id")]


class TaskSubmission(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=100, description="A task the API accepts")
    args: dict[str, Any] = Field(default_factory=dict, description="Checked by the task's model")
    defer_by: float | None = Field(default=None, ge=0, description="Seconds to wait before it runs")
    task_id: str | None = Field(
        default=None,
        pattern=TASK_ID_PATTERN,
        description="Your id, to make the submission idempotent",
    )


class TaskAccepted(BaseModel):
    task_id: str
    status: Literal["queued", "deferred"]
    status_url: str


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


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        **problem(409, "A task with this task_id already exists"),
        **problem(413, "The request body is too large"),
        **problem(422, "Unknown task, or arguments its model refuses"),
        **problem(503, "The queue is unreachable, or full (TASK_MAX_QUEUE_DEPTH); retry later"),
    },
)
async def submit_task(
    submission: TaskSubmission, tasks: TaskServiceDep, response: Response
) -> TaskAccepted:
    """Queue a task; answers at once with where to follow it."""
    try:
        submitted = await tasks.submit(
            submission.name,
            submission.args,
            defer_by_s=submission.defer_by,
            task_id=submission.task_id,
        )
    except UnknownTaskError as exc:
        raise HTTPException(UNPROCESSABLE, str(exc)) from exc
    except InvalidTaskArgsError as exc:
        detail = [{**error, "loc": ["body", "args", *error["loc"]]} for error in exc.errors]
        raise HTTPException(UNPROCESSABLE, detail) from exc
    except DeferTooLongError as exc:
        raise HTTPException(UNPROCESSABLE, str(exc)) from exc
    except DuplicateTaskError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    url = status_url(submitted.task_id)
    response.headers["Location"] = url
    return TaskAccepted(task_id=submitted.task_id, status=submitted.status, status_url=url)


@router.get("/{task_id}", responses=problem(404, "No task with this id"))
async def get_task(task_id: TaskId, tasks: TaskServiceDep) -> TaskOut:
    """The task's status, progress (0-100), result or error, tries and times."""
    try:
        state = await tasks.state(task_id)
    except TaskNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return TaskOut(**vars(state))


@router.delete(
    "/{task_id}",
    status_code=status.HTTP_202_ACCEPTED,
    responses={**problem(404, "No task with this id"), **problem(409, "Already finished")},
)
async def cancel_task(task_id: TaskId, tasks: TaskServiceDep) -> TaskCancelled:
    """Abort a task: a queued or deferred one never runs ("aborted"); a running one is
    cancelled by its worker ("aborting", then "aborted" in its status)."""
    try:
        outcome = await tasks.cancel(task_id)
    except TaskNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    except TaskFinishedError as exc:
        raise HTTPException(status.HTTP_409_CONFLICT, str(exc)) from exc
    return TaskCancelled(task_id=task_id, status="aborted" if outcome == "aborted" else "aborting")


UNAUTHORIZED = problem(401, "OPERATOR_TOKEN is set and the request does not bear it")


@router.get("", dependencies=[OperatorDep], responses=UNAUTHORIZED)
async def list_failed_tasks(
    tasks: TaskServiceDep,
    status_filter: Annotated[
        Literal["failed"], Query(alias="status", description="`failed`: the dead-letter list")
    ],
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[DeadLetterOut]:
    """Tasks that failed for good (tries exhausted, or a non-retryable error), the most recent
    first, with their arguments, error and traceback; kept until retried."""
    letters = await tasks.dead_letters(limit=limit, offset=offset)
    return [DeadLetterOut(**vars(letter)) for letter in letters]


@router.post(
    "/{task_id}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    dependencies=[OperatorDep],
    responses={**UNAUTHORIZED, **problem(404, "Not among the tasks that failed for good")},
)
async def retry_task(task_id: TaskId, tasks: TaskServiceDep, response: Response) -> TaskAccepted:
    """Enqueue a dead-lettered task again, under the same id and with the same arguments."""
    try:
        await tasks.retry(task_id)
    except NotDeadLetteredError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    url = status_url(task_id)
    response.headers["Location"] = url
    return TaskAccepted(task_id=task_id, status="queued", status_url=url)
