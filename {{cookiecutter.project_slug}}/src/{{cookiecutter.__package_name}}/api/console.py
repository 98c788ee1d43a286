"""The operator console at /console: server-rendered pages over the task layer, for principals
with the operator scope. The pages follow changes through one Server-Sent Events stream.

The addresses are stable, for links in alerts and chat: /console, /console/tasks?status=...
&name=...&queue=..., /console/tasks/{task_id}, /console/dead-letters, /console/sign-in.
"""

import json
import logging
import secrets
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Annotated, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import HTMLResponse, StreamingResponse

from ..services.task_lists import LIST_STATUSES, PAGE_SIZE, ListStatus
from ..settings import Settings
from .auth import Access
from .console_pages import STATIC, ConsoleRoute, console_of, go, page, static_file, templates
from .console_session import (
    CONSOLE_PATH,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
    Session,
    check_csrf,
    current_session,
    read_form,
    safe_next,
    secure_cookies,
    sessions_of,
)

logger = logging.getLogger(__name__)
router = APIRouter(prefix=CONSOLE_PATH, include_in_schema=False, route_class=ConsoleRoute)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    if name not in STATIC:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "No such file.")
    return static_file(name)


@router.get("/sign-in")
async def sign_in_page(request: Request, next: str | None = None) -> Response:
    if await current_session(request) is not None:
        return go(safe_next(next))
    return sign_in_form(request, next, error=None)


def sign_in_form(request: Request, target: str | None, *, error: str | None) -> Response:
    token = request.cookies.get(SIGN_IN_COOKIE) or secrets.token_urlsafe(32)
    response = templates.TemplateResponse(
        request,
        "sign_in.html",
        {"csrf": token, "next": safe_next(target), "error": error, "fragment": False},
    )
    response.set_cookie(
        SIGN_IN_COOKIE,
        token,
        max_age=3600,
        path=CONSOLE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )
    return response


@router.post("/sign-in")
async def sign_in(request: Request) -> Response:
    form = await read_form(request)
    check_csrf(request.cookies.get(SIGN_IN_COOKIE, ""), form)
    credential = form.get("key", "").strip()
    access: Access = request.app.state.access
    try:
        principal = await access.principal(credential) if credential else None
    except Exception as exc:  # a refused JWT, or the identity provider out of reach
        logger.info("console: sign-in refused: %s", exc)
        principal = None
    target = form.get("next")
    # A refusal is the form again, with what is wrong (200, as browsers expect of a form).
    if principal is None:
        return sign_in_form(request, target, error="This key or token is not known.")
    if not principal.is_operator:
        error = "This key or token does not have the operator scope."
        return sign_in_form(request, target, error=error)
    token = await sessions_of(request).open(principal, credential)
    logger.info("console: %s signed in", principal.name)
    response = go(safe_next(target))
    settings: Settings = request.app.state.settings
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=settings.console_session_ttl_s,
        path=CONSOLE_PATH,
        httponly=True,
        samesite="strict",
        secure=secure_cookies(request),
    )
    response.delete_cookie(SIGN_IN_COOKIE, path=CONSOLE_PATH)
    return response


@router.post("/sign-out")
async def sign_out(request: Request, session: Session) -> Response:
    check_csrf(session.csrf, await read_form(request))
    await sessions_of(request).close(request.cookies.get(SESSION_COOKIE, ""))
    logger.info("console: %s signed out", session.operator)
    response = go(f"{CONSOLE_PATH}/sign-in")
    response.delete_cookie(SESSION_COOKIE, path=CONSOLE_PATH)
    return response


@router.get("")
async def overview(request: Request, session: Session) -> HTMLResponse:
    data = await console_of(request).overview()
    return page(request, "overview.html", session, overview=data, live=True)


@router.get("/tasks")
async def tasks(
    request: Request,
    session: Session,
    status_: Annotated[ListStatus, Query(alias="status")] = "recent",
    name: Annotated[str | None, Query(max_length=200)] = None,
    queue: Annotated[str | None, Query(max_length=200)] = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    console = console_of(request)
    result = await console.tasks(status_, name=name or None, queue=queue or None, page=page_number)
    filters = {"status": status_, "name": name or "", "queue": queue or ""}
    return page(
        request,
        "tasks.html",
        session,
        result=result,
        filters=filters,
        statuses=LIST_STATUSES,
        queues=console.labels,
        page_size=PAGE_SIZE,
        link=lambda **changes: f"{CONSOLE_PATH}/tasks?{urlencode({**filters, **changes})}",
        live=True,
    )


@router.get("/tasks/lookup")
async def lookup(task_id: Annotated[str, Query(max_length=300)] = "") -> Response:
    if not task_id.strip():
        return go(f"{CONSOLE_PATH}/tasks")
    return go(f"{CONSOLE_PATH}/tasks/{quote(task_id.strip(), safe='')}")


@router.get("/tasks/{task_id}")
async def task(request: Request, session: Session, task_id: str) -> HTMLResponse:
    detail = await console_of(request).task(task_id)
    code = status.HTTP_200_OK if detail else status.HTTP_404_NOT_FOUND
    response = page(request, "task.html", session, task=detail, task_id=task_id, live=True)
    response.status_code = code
    return response


@router.post("/tasks/{task_id}/abort")
async def abort(request: Request, session: Session, task_id: str) -> Response:
    check_csrf(session.csrf, await read_form(request))
    outcome = await console_of(request).abort(task_id, session.operator)
    return go(f"{CONSOLE_PATH}/tasks/{task_id}", notice=outcome or "finished")


@router.get("/dead-letters")
async def dead_letters(
    request: Request,
    session: Session,
    name: Annotated[str | None, Query(max_length=200)] = None,
    page_number: Annotated[int, Query(alias="page", ge=1, le=100_000)] = 1,
) -> HTMLResponse:
    console = console_of(request)
    result = await console.dead_letters(name=name or None, page=page_number)
    filters = {"name": name or ""}
    return page(
        request,
        "dead_letters.html",
        session,
        result=result,
        names=await console.dead_letter_names(),
        filters=filters,
        link=lambda **changes: f"{CONSOLE_PATH}/dead-letters?{urlencode({**filters, **changes})}",
        live=True,
    )


@router.post("/dead-letters/{task_id}/{action}")
async def dead_letter_action(
    request: Request, session: Session, task_id: str, action: Literal["retry", "delete"]
) -> Response:
    check_csrf(session.csrf, await read_form(request))
    console = console_of(request)
    if action == "retry":
        done = await console.retry_dead_letter(task_id, session.operator)
        return go(f"{CONSOLE_PATH}/tasks/{task_id}", notice="retried" if done else "gone")
    done = await console.delete_dead_letter(task_id, session.operator)
    return go(f"{CONSOLE_PATH}/dead-letters", notice="deleted" if done else "gone")


@router.get("/dead-letters-of/{name}/{action}")
async def confirm_bulk(
    request: Request, session: Session, name: str, action: Literal["retry", "delete"]
) -> HTMLResponse:
    """The confirmation step before acting on every dead letter of a task."""
    count = await console_of(request).dead_letters(name=name, page=1)
    return page(
        request, "confirm.html", session, name=name, action=action, count=count.total, live=False
    )


@router.post("/dead-letters-of/{name}/{action}")
async def bulk(
    request: Request, session: Session, name: str, action: Literal["retry", "delete"]
) -> Response:
    check_csrf(session.csrf, await read_form(request))
    await console_of(request).bulk(action, name, session.operator)
    return go(f"{CONSOLE_PATH}/dead-letters", notice=f"bulk-{action}d")


@router.get("/events")
async def events(request: Request, session: Session) -> StreamingResponse:
    """One stream per open page: `change` events naming the tasks that changed ("" for a
    task enqueued or aborted), and a comment now and then to keep the connection open."""
    changes = console_of(request).changes()
    return StreamingResponse(
        stream(changes, request),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
    )


async def stream(changes: AsyncGenerator[set[str]], request: Request) -> AsyncIterator[bytes]:
    try:
        yield b"retry: 2000\n\n"
        async for changed in changes:
            if await request.is_disconnected():
                break
            if changed:
                yield f"event: change\ndata: {json.dumps(sorted(changed))}\n\n".encode()
            else:
                yield b": still here\n\n"
    finally:
        await changes.aclose()
