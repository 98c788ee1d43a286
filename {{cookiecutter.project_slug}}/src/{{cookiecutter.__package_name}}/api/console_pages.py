"""How the operator console's pages are made: its Jinja2 templates and their filters, the
notices its actions leave, and the security headers every answer carries."""

from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request, Response, status
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from fastapi.templating import Jinja2Templates

from ..services.console import ConsoleService
from ..settings import Settings
from .auth import Access
from .console_session import SECURITY_HEADERS, ConsoleSession

HERE = Path(__file__).resolve().parent.parent / "console"
STATIC = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "favicon.svg": "image/svg+xml",
}
NOTICES = {
    "aborted": "The task was aborted.",
    "aborting": "The task is being cancelled by its worker.",
    "finished": "The task had already finished: nothing to abort.",
    "retried": "The task was queued again.",
    "deleted": "The dead letter was deleted.",
    "gone": "That dead letter is no longer there (retried or deleted meanwhile).",
    "bulk-retried": "The dead letters of that task were queued again.",
    "bulk-deleted": "The dead letters of that task were deleted.",
}
MOMENT = "%Y-%m-%d %H:%M:%S UTC"
CLOCK = "%m-%d %H:%M:%S"  # in lists: the full moment is on hover
templates = Jinja2Templates(directory=HERE / "templates")
templates.env.filters["moment"] = lambda value: (
    value.astimezone(UTC).strftime(MOMENT) if isinstance(value, datetime) else "-"
)
templates.env.filters["clock"] = lambda value: value.astimezone(UTC).strftime(CLOCK)
templates.env.filters["epoch"] = lambda value: (
    datetime.fromtimestamp(value, UTC).strftime(MOMENT) if value else "-"
)


def duration(seconds: float | None) -> str:
    """A duration as people read it: 850 ms, 12.4 s, 3 min 5 s, 2 h 10 min."""
    if seconds is None:
        return "-"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest} s"
    return f"{minutes // 60} h {minutes % 60} min"


def plural(count: int, noun: str) -> str:
    """`count` and `noun`, with an s unless there is one: 1 dead letter, 2 dead letters."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


templates.env.filters["duration"] = duration
templates.env.filters["plural"] = plural


class ConsoleRoute(APIRoute):
    """Every answer of the console carries its security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            response = await handler(request)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)  # static files keep their caching
            return response

        return handle


def console_of(request: Request) -> ConsoleService:
    state = request.app.state
    access: Access = state.access
    owners = {principal.tag: principal.name for principal in access.principals.values()}
    return ConsoleService(state.task_queue, state.settings, owners)


def page(request: Request, template: str, session: ConsoleSession, **context: Any) -> HTMLResponse:
    """A console page; only its main part when the page's script asks for a live update."""
    settings: Settings = request.app.state.settings
    return templates.TemplateResponse(
        request,
        template,
        {
            "fragment": request.headers.get("x-console-fragment") == "1",
            "app_name": settings.app_name,
            "operator": session.operator,
            "csrf": session.csrf,
            "notice": NOTICES.get(request.query_params.get("notice", "")),
            **context,
        },
    )


def go(path: str, **query: str) -> RedirectResponse:
    target = path + (f"?{urlencode(query)}" if query else "")
    return RedirectResponse(target, status.HTTP_303_SEE_OTHER)


def static_file(name: str) -> Response:
    """One of the STATIC files, cached by browsers for a few minutes."""
    content = (HERE / "static" / name).read_bytes()
    return Response(content, media_type=STATIC[name], headers={"Cache-Control": "max-age=300"})
