"""503 while the server is unreachable, for every route."""

from collections.abc import Callable, Coroutine
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ..infrastructure.redis import UNAVAILABLE_ERRORS

RETRY_AFTER_S = 5


async def server_unavailable(request: Request, exc: Exception) -> Response:
    """A 503 with a reason and Retry-After, never a 500 with a traceback."""
    return JSONResponse(
        {"detail": "The task queue is unreachable right now; retry shortly."},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
EXCEPTION_HANDLERS: dict[int | type[Exception], Handler] = dict.fromkeys(
    UNAVAILABLE_ERRORS, server_unavailable
)
