"""Error answers every route shares: 503 while the server is unreachable, and 422 bodies that
say what is wrong without echoing the input back."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
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


async def invalid_request(request: Request, exc: Exception) -> Response:
    """422 with where and what is wrong in each error. The input is left out: it may be large,
    or not even valid JSON (NaN and Infinity are accepted by the parser, not by JSON)."""
    assert isinstance(exc, RequestValidationError)
    errors = [{key: error[key] for key in ("type", "loc", "msg")} for error in exc.errors()]
    return JSONResponse({"detail": jsonable_encoder(errors)}, status_code=422)


Handler = Callable[[Request, Any], Coroutine[Any, Any, Response]]
EXCEPTION_HANDLERS: dict[int | type[Exception], Handler] = {
    **dict.fromkeys(UNAVAILABLE_ERRORS, server_unavailable),
    RequestValidationError: invalid_request,
}
