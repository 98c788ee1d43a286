"""Every task the workers run, and the smaller set the HTTP API may enqueue.

To add a task: write `async def my_task(ctx, ...)` in this package, then add a `TaskSpec` to
`TASKS`, with an `args_model` only if clients may enqueue it over HTTP.
"""

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel

{% if cookiecutter.__examples == "yes" -%}
from .emails import BulkEmailArgs, SingleEmailArgs, send_bulk_emails, send_single_email
{% endif -%}
from .example import EXAMPLE_TIMEOUT_S, ExampleTaskArgs, example_task
from .maintenance import cleanup_expired_sessions, log_queue_depths, report_stale_tasks
{%- if cookiecutter.__examples == "yes" %}
from .media import MediaArgs, generate_thumbnail, optimize_image, process_media
{%- endif %}


@dataclass(frozen=True)
class TaskSpec:
    function: Callable[..., Awaitable[Any]]
    # The model of `args` in POST /api/v1/tasks; None keeps the task off the HTTP API.
    args_model: type[BaseModel] | None = None
    # "slow" sends it to the slow queue, served by its own workers.
    queue: Literal["default", "slow"] = "default"
    # Seconds before the task is cancelled; None uses WORKER_JOB_TIMEOUT_S.
    timeout_s: float | None = None
    # Tries, the first included; None uses WORKER_MAX_TRIES.
    max_tries: int | None = None
    # Sensitive tasks are left out of the tasks:submit scope: submitting one takes
    # tasks:submit:<name> (or operator).
    sensitive: bool = False

    @property
    def name(self) -> str:
        return self.function.__name__


{% if cookiecutter.__examples == "yes" -%}
TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(example_task, args_model=ExampleTaskArgs, timeout_s=EXAMPLE_TIMEOUT_S),
    # The worked examples: the media pipeline (POST /api/v1/media enqueues process_media)...
    TaskSpec(process_media, args_model=MediaArgs, timeout_s=120),
    TaskSpec(generate_thumbnail, args_model=MediaArgs, timeout_s=60),
    TaskSpec(optimize_image, args_model=MediaArgs, timeout_s=60),
    # ...and e-mail, on the slow queue: a bulk send can take hours at its rate limit.
    TaskSpec(send_single_email, args_model=SingleEmailArgs, queue="slow", timeout_s=60),
    # Bulk e-mail is sensitive: keys with tasks:submit alone cannot make the service a relay.
    TaskSpec(
        send_bulk_emails,
        args_model=BulkEmailArgs,
        queue="slow",
        timeout_s=24 * 3600,
        sensitive=True,
    ),
)
{% else -%}
TASKS: tuple[TaskSpec, ...] = (
    TaskSpec(example_task, args_model=ExampleTaskArgs, timeout_s=EXAMPLE_TIMEOUT_S),
)
{% endif -%}
API_TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in TASKS if spec.args_model}


@dataclass(frozen=True)
class CronSpec:
    """When a housekeeping task runs: the hours, minutes and weekdays (0 = Monday) it fires at;
    None means every one."""

    function: Callable[..., Awaitable[Any]]
    hour: frozenset[int] | None = None
    minute: frozenset[int] | None = None
    weekday: frozenset[int] | None = None

    @property
    def name(self) -> str:
        return self.function.__name__


# Each fires once per scheduled time however many workers run (see infrastructure/tasks.py).
CRONS: tuple[CronSpec, ...] = (
    CronSpec(cleanup_expired_sessions, hour=frozenset({3}), minute=frozenset({0})),
    CronSpec(log_queue_depths, minute=frozenset({0, 30})),
    CronSpec(
        report_stale_tasks,
        weekday=frozenset(range(5)),
        hour=frozenset({9}),
        minute=frozenset({0}),
    ),
)
