"""Follow a task live: Server-Sent Events and a WebSocket, relaying the same event objects."""

import json
import re
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Annotated

import anyio
from fastapi import (
    APIRouter,
    Depends,
    HTTPException,
    Query,
    Request,
    WebSocket,
    WebSocketDisconnect,
    status,
)
from fastapi.requests import HTTPConnection
from fastapi.responses import StreamingResponse
from starlette.websockets import WebSocketState

from ..access import READ
from ..infrastructure.events import TaskEvent
from ..infrastructure.redis import UNAVAILABLE_ERRORS
from ..services.tasks import TaskNotFoundError, TaskService
from .auth import access_of, bearer_credential, check_visible, forbidden, unauthorized
from .deps import TaskServiceDep
from .tasks import FORBIDDEN, TASK_ID_PATTERN, UNAUTHORIZED, TaskId, problem

router = APIRouter(prefix="/api/v1/tasks", tags=["tasks"])
# A comment line is sent after this long without an event, so that proxies keep the stream.
KEEPALIVE_S = 15.0
# How long a browser's EventSource waits before it reconnects after a dropped stream.
SSE_RETRY_MS = 3_000
# Close codes 4000 + the HTTP status the same refusal gets over HTTP: 4401, 4403, 4404.
WS_CLOSE_HTTP_OFFSET = 4000
WS_CLOSE_NOT_FOUND = WS_CLOSE_HTTP_OFFSET + 404
WS_CLOSE_TRY_AGAIN = 1013
WS_CLOSE_NORMAL = 1000
QUEUE_UNREACHABLE = "The task queue is unreachable; retry shortly."
FollowToken = Annotated[
    str | None, Query(max_length=200, description="The token of events_url or ws_url")
]


async def may_follow(connection: HTTPConnection, token: str | None, task_id: str) -> None:
    """A follow token for this task, or a credential with tasks:read and sight of the task."""
    access = access_of(connection)
    if token is not None:
        if not access.follow_tokens.allows(token, task_id):
            raise unauthorized("This link's token is for another task, or has expired.")
        return
    principal = await access.authenticate(bearer_credential(connection))
    if not principal.can(READ):
        raise forbidden(READ)
    check_visible(principal, task_id)


async def follower(task_id: str, request: Request, token: FollowToken = None) -> None:
    """`may_follow` as a dependency: the credential is checked before anything else."""
    try:
        await may_follow(request, token, task_id)
    except TaskNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc


@router.get(
    "/{task_id}/events",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {"text/event-stream": {}},
            "description": "One `data:` line of JSON per event; ends after the terminal one",
        },
        **UNAUTHORIZED,
        **FORBIDDEN,
        **problem(404, "No task with this id"),
    },
)
async def task_events(
    task_id: TaskId, tasks: TaskServiceDep, _: Annotated[None, Depends(follower)]
) -> StreamingResponse:
    """Server-Sent Events: the task's current state, then its progress and status events;
    the stream ends after the terminal event (complete, failed or aborted). Needs the
    `token` of the task's `events_url` (browsers), or an API key with tasks:read."""
    try:
        await tasks.state(task_id)
    except TaskNotFoundError as exc:
        raise HTTPException(status.HTTP_404_NOT_FOUND, str(exc)) from exc
    return StreamingResponse(
        server_sent_events(tasks, task_id),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def server_sent_events(tasks: TaskService, task_id: str) -> AsyncIterator[str]:
    yield f"retry: {SSE_RETRY_MS}\n\n"
    quiet_since = time.monotonic()
    try:
        async with aclosing(tasks.follow(task_id)) as events:
            async for event in events:
                if event is not None:
                    yield f"data: {encode(event)}\n\n"
                elif time.monotonic() - quiet_since >= KEEPALIVE_S:
                    yield ": keep-alive\n\n"
                else:
                    continue
                quiet_since = time.monotonic()
    except UNAVAILABLE_ERRORS:
        return  # the stream ends; the client reconnects after `retry` and gets the state


@router.websocket("/{task_id}/ws")
async def task_events_ws(
    websocket: WebSocket, task_id: str, tasks: TaskServiceDep, token: FollowToken = None
) -> None:
    """The same events as JSON text messages; the same credentials as the SSE route. Closes
    with 1000 after the terminal event, 4401 without a valid credential, 4403 without
    tasks:read, 4404 for an unknown task, 1013 while the queue is unreachable."""
    await websocket.accept()
    try:
        if not re.fullmatch(TASK_ID_PATTERN, task_id):
            raise TaskNotFoundError(task_id)
        await may_follow(websocket, token, task_id)
        await tasks.state(task_id)
    except WebSocketDisconnect:
        return
    except HTTPException as exc:
        await websocket.close(WS_CLOSE_HTTP_OFFSET + exc.status_code, str(exc.detail))
        return
    except TaskNotFoundError as exc:
        await websocket.close(WS_CLOSE_NOT_FOUND, str(exc))
        return
    except UNAVAILABLE_ERRORS:
        await websocket.close(WS_CLOSE_TRY_AGAIN, QUEUE_UNREACHABLE)
        return
    closing: tuple[int, str] | None = None  # stays None when the client leaves first
    async with anyio.create_task_group() as group:
        group.start_soon(close_on_disconnect, websocket, group.cancel_scope)
        closing = await relay(websocket, tasks, task_id)
        group.cancel_scope.cancel()
    if closing is not None and websocket.client_state is WebSocketState.CONNECTED:
        await websocket.close(*closing)


async def relay(websocket: WebSocket, tasks: TaskService, task_id: str) -> tuple[int, str] | None:
    """Send the task's events; then the close code and reason, or None when the client left
    while an event was on its way. Errors end here, not in the task group, where they would
    come out wrapped in an ExceptionGroup."""
    try:
        async with aclosing(tasks.follow(task_id)) as events:
            async for event in events:
                if event is not None:
                    await websocket.send_text(encode(event))
    except WebSocketDisconnect:
        return None
    except UNAVAILABLE_ERRORS:
        return WS_CLOSE_TRY_AGAIN, QUEUE_UNREACHABLE
    return WS_CLOSE_NORMAL, ""


async def close_on_disconnect(websocket: WebSocket, scope: anyio.CancelScope) -> None:
    """Messages from the client are ignored; its leaving stops the relay."""
    while (await websocket.receive())["type"] != "websocket.disconnect":
        pass
    scope.cancel()


def encode(event: TaskEvent) -> str:
    return json.dumps(event, separators=(",", ":"))
