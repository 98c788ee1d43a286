"""Error answers every route shares: 503 while the server is unreachable or the queue is full,
429 past a client's submission rate, and 422 bodies that say what is wrong without echoing the
input back."""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

{% if cookiecutter.__database == "postgres" -%}
from ..infrastructure.database import DatabaseUnavailableError
{% endif -%}
from ..infrastructure.enqueue_script import QueueFullError, RateLimitedError
from ..infrastructure.redis import UNAVAILABLE_ERRORS

RETRY_AFTER_S = 5
# A full queue drains at the workers' pace: clients wait longer before trying again.
QUEUE_FULL_RETRY_AFTER_S = 30


async def server_unavailable(request: Request, exc: Exception) -> Response:
    """A 503 with a reason and Retry-After, never a 500 with a traceback."""
    return JSONResponse(
        {"detail": "The task queue is unreachable right now; retry shortly."},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


{%- if cookiecutter.__database == "postgres" %}


async def database_unavailable(request: Request, exc: Exception) -> Response:
    """A 503 with a reason and Retry-After while the database cannot be reached."""
    return JSONResponse(
        {"detail": "The database is unreachable right now; retry shortly."},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )
{%- endif %}


async def queue_full(request: Request, exc: Exception) -> Response:
    """Load shedding: a 503 with Retry-After while the queue holds TASK_MAX_QUEUE_DEPTH tasks."""
    return JSONResponse(
        {"detail": "The task queue is full right now; retry later."},
        status_code=503,
        headers={"Retry-After": str(QUEUE_FULL_RETRY_AFTER_S)},
    )


async def rate_limited(request: Request, exc: Exception) -> Response:
    """429 with Retry-After: the submitter's window ends then."""
    assert isinstance(exc, RateLimitedError)
    return JSONResponse(
        {"detail": f"Too many submissions from this client; retry in {exc.retry_after_s} s."},
        status_code=429,
        headers={"Retry-After": str(exc.retry_after_s)},
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
{%- if cookiecutter.__database == "postgres" %}
    DatabaseUnavailableError: database_unavailable,
{%- endif %}
    QueueFullError: queue_full,
    RateLimitedError: rate_limited,
    RequestValidationError: invalid_request,
}
