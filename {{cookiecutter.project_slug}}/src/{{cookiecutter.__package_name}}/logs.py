"""Logging for the API and the workers: one JSON object per line (readable lines in
development), from our loggers and uvicorn's and arq's alike, each carrying the context bound
for the request or task at hand (`request_id`; in workers `task_id`, `task_name`, `try`,
`queue`).

Code logs with the standard library (`logging.getLogger(__name__)`). The request id is one
context variable, `REQUEST_ID`; other context is bound with `structlog.contextvars`. Both follow
the asyncio task, so concurrent requests and tasks never mix theirs.
"""

import contextvars
import logging
import sys

import structlog
from structlog.typing import EventDict, Processor

from .settings import Settings

HANDLER_NAME = "{{ cookiecutter.__package_name }}"
# The id of the request being served (api/request_id.py){% if cookiecutter.cache_backend != "none" %}, or of the one that enqueued the task
# being run{% endif %}: on every log line as `request_id`.
REQUEST_ID: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)
# Libraries that install handlers of their own: their records go through ours instead.
FOREIGN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access"{% if cookiecutter.cache_backend != "none" %}, "arq"{% endif %})
# The start and stop lines of uvicorn{% if cookiecutter.cache_backend != "none" %} and the workers{% endif %}, by logger and how their message begins:
# left out with LOG_LIFECYCLE=false.
LIFECYCLE = {
    "uvicorn.error": (
        "Started server process",
        "Waiting for application",
        "Application startup complete",
        "Shutting down",
        "Application shutdown complete",
        "Finished server process",
    ),
{%- if cookiecutter.cache_backend != "none" %}
    "arq.worker": (
        "Starting worker for",
        "redis_version=",
        "Setting allow_pick_jobs",
        "shutdown on",
    ),
{%- endif %}
}


def add_request_id(_: object, __: str, event: EventDict) -> EventDict:
    request_id = REQUEST_ID.get()
    if request_id is not None:
        event.setdefault("request_id", request_id)
    return event


def not_lifecycle(record: logging.LogRecord) -> bool:
    starts = LIFECYCLE.get(record.name)
    return starts is None or not record.getMessage().startswith(starts)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is when a record comes, not as it was when the handler was
    made (pytest swaps it per test; a record logged at exit would find a closed stream)."""

    @property
    def stream(self) -> object:
        return sys.stderr

    @stream.setter
    def stream(self, value: object) -> None:
        pass


def configure_logging(settings: Settings{% if cookiecutter.cache_backend != "none" %}, *, verbose: bool = False{% endif %}) -> None:
    """Send every record to stderr through one handler, as JSON or for the console
    (`LOG_FORMAT`, by default JSON outside development). Called again, it replaces its own
    handler and leaves any other (pytest's) in place."""
    context: list[Processor] = [
        add_request_id,
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="time"),
    ]
    rendering: list[Processor]
    if settings.log_json:
        rendering = [
            structlog.processors.format_exc_info,
            structlog.processors.EventRenamer("message"),
            structlog.processors.JSONRenderer(),
        ]
    else:
        rendering = [structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=context,
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *rendering],
    )
    handler = StderrHandler()
    handler.set_name(HANDLER_NAME)
    handler.setFormatter(formatter)
    if not settings.log_lifecycle:
        handler.addFilter(not_lifecycle)
    root = logging.getLogger()
    for old in [each for each in root.handlers if each.get_name() == HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(settings.log_level)
    for name in FOREIGN_LOGGERS:
        foreign = logging.getLogger(name)
        foreign.handlers.clear()
        foreign.propagate = True
{%- if cookiecutter.cache_backend != "none" %}
    # arq logs each task's start and end at INFO, and more with --verbose.
    logging.getLogger("arq").setLevel(logging.DEBUG if verbose else logging.INFO)
{%- endif %}
