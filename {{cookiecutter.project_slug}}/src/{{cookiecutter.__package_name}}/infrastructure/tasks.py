"""The worker that `python -m {{ cookiecutter.__package_name }}.worker` runs.

`Worker` (worker_loop.py) runs `WorkerSettings` (the default queue and the cron jobs) or, with
`--queue slow`, `SlowWorkerSettings` (the slow queue). arq's own CLI
(`arq ...tasks.WorkerSettings`) would run them in arq's plain worker, without crash leases,
wake-ups or dead letters for the tasks arq fails itself: such a worker refuses to start and
names the command to use. `arq --check` on these settings works as usual.

Every arq option we rely on is set here explicitly, from the settings; docs/background-tasks.md
explains each value. Tasks are plain `async def task(ctx, ...)` functions listed in
`tasks/registry.py`; task_tries.py wraps them with retries and result checks.

Scripts and seeds import what arq users know from here: `enqueue_task` (which refuses a name
the registry does not list), `get_task_pool` and `Retry`.
"""

import asyncio
import functools
import logging
import os
import socket
import sys
from collections.abc import Awaitable, Callable
from typing import Any, NoReturn, cast

from arq.cron import CronJob, cron
from arq.typing import WorkerCoroutine
from arq.worker import Function, func

from ..logs import configure_logging
from ..settings import Settings, get_settings
from ..tasks.registry import CRONS, TASKS, CronSpec, TaskSpec
from ..tracing import configure_tracing, traced
from .cache import Cache
{%- if cookiecutter.__database == "postgres" %}
from .database import create_engine, session_factory
{%- endif %}
{%- if cookiecutter.__database == "postgres" %}
from .outbox_relay import OutboxRelay
{%- endif %}
from .queue import Retry as Retry
from .queue import TaskQueue, open_queue_pool, queue_redis_settings
from .queue import enqueue_task as enqueue_on_queue
from .queue import get_task_pool as get_task_pool
from .redis import UNAVAILABLE_ERRORS, close_redis, close_sentinels, create_redis
from .serialization import serialize
from .task_context import read_job
from .task_metrics import TaskMetricsStore
from .task_tries import job_ended, with_retries
from .worker_loop import RUN_BY_OUR_WORKER, Worker

logger = logging.getLogger(__name__)
PLAIN_ARQ_REFUSAL = (
    "arq's CLI runs arq's own worker, which lacks this service's crash leases, wake-ups and "
    "dead letters: start workers with `just worker` (or `python -m "
    "{{ cookiecutter.__package_name }}.worker [--queue slow]`). "
    "`arq --check` on these settings still works."
)
# arq's own timeout of a try, a backstop this far behind the task layer's (`within`).
ARQ_TIMEOUT_MARGIN_S = 10.0


def as_worker_function(spec: TaskSpec, settings: Settings) -> Function:
    max_tries = spec.max_tries or settings.worker_max_tries
    timeout_s = spec.timeout_s or settings.worker_job_timeout_s
    function = with_retries(spec.function, max_tries=max_tries, timeout_s=timeout_s)
    return func(
        cast(WorkerCoroutine, traced(function)),
        name=spec.name,
        timeout=timeout_s + ARQ_TIMEOUT_MARGIN_S,
        max_tries=max_tries,
    )


def as_cron_job(spec: CronSpec) -> CronJob:
    """`unique=True`: the job id is the name and the scheduled time, so when several workers
    enqueue the same run, only the first enqueue counts and it runs once."""
    return cron(
        cast(WorkerCoroutine, spec.function),
        name=spec.name,
        hour=set(spec.hour) if spec.hour else None,
        minute=set(spec.minute) if spec.minute else None,
        weekday=set(spec.weekday) if spec.weekday else None,
        unique=True,
    )


{% if cookiecutter.__database == "postgres" -%}
def on_startup(
    settings: Settings, *, relay_outbox: bool = False
) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def startup(ctx: dict[str, Any]) -> None:
        """Create the clients every task shares, once per worker process, into `ctx`: `db`
        makes database sessions. With `relay_outbox`, start the outbox relay."""
{%- else -%}
def on_startup(settings: Settings) -> Callable[[dict[str, Any]], Awaitable[None]]:
    async def startup(ctx: dict[str, Any]) -> None:
        """Create the clients every task shares, once per worker process, into `ctx`."""
{%- endif %}
        if not ctx.get(RUN_BY_OUR_WORKER):
            refuse_to_start()
        ctx["settings"] = settings
        ctx["cache_redis"] = create_redis(settings)
        ctx["cache"] = Cache(
            ctx["cache_redis"],
            prefix=settings.cache_key_prefix,
            default_ttl_s=settings.cache_default_ttl_s,
        )
        ctx["tasks"] = TaskQueue(ctx["redis"], settings)
{%- if cookiecutter.__database == "postgres" %}
        ctx["db_engine"] = engine = create_engine(settings)
        ctx["db"] = session_factory(engine)
        if relay_outbox:
            interval_s = settings.outbox_poll_interval_s
            relay = OutboxRelay(engine, ctx["tasks"], poll_interval_s=interval_s)
            ctx["outbox_relay"] = asyncio.create_task(relay.run(), name="outbox relay")
{%- endif %}

    return startup


def refuse_to_start() -> NoReturn:
    """Stop a plain arq worker before it takes any task. It exits at once, as arq's own
    shutdown would delete the queue's heartbeat, which the running workers share."""
    print(f"ERROR: {PLAIN_ARQ_REFUSAL}", file=sys.stderr, flush=True)
    os._exit(2)


async def shutdown(ctx: dict[str, Any]) -> None:
{%- if cookiecutter.__database == "postgres" %}
    relay: asyncio.Task[None] | None = ctx.get("outbox_relay")
    if relay is not None:
        relay.cancel()
        await asyncio.gather(relay, return_exceptions=True)
    await ctx["db_engine"].dispose()
{%- endif %}
    await close_redis(ctx["cache_redis"])
    await close_sentinels(ctx["redis"])  # arq closes its pool, not the sentinel clients behind it


def worker_settings(settings: Settings, *, queue: str, with_cron: bool) -> dict[str, Any]:
    """The options of one arq worker. Values differing from arq's defaults are deliberate."""
    return {
        "functions": [as_worker_function(spec, settings) for spec in TASKS],
        "cron_jobs": [as_cron_job(spec) for spec in CRONS] if with_cron else [],
        "queue_name": queue,
        # Through an outage the worker waits for the server and goes on when it is back,
        # instead of exiting (arq's own pool gives up after five tries).
        "redis_pool": open_queue_pool(settings, patient=True),
        # What `arq --check` connects with.
        "redis_settings": queue_redis_settings(settings),
{%- if cookiecutter.__database == "postgres" %}
        # The default queue's workers relay the outbox (enqueue on commit), one at a time.
        "on_startup": on_startup(settings, relay_outbox=with_cron),
{%- else %}
        "on_startup": on_startup(settings),
{%- endif %}
        "on_shutdown": shutdown,
        # Claims last this long, renewed while the task runs (our Worker; not arq's option),
        # from a thread of their own with its own connection.
        "lease_s": settings.worker_lease_s,
        "lease_redis": functools.partial(create_redis, settings, queue=True),
        # A pass over the queue, or a renewal, that Redis leaves unanswered this long is an
        # error, logged and tried again (our Worker): a stalled server never hangs it silently.
        "redis_timeout_s": settings.redis_socket_timeout_s,
        # How long the console keeps a task's timeline (our Worker; not arq's option).
        "history_keep_s": settings.console_history_s,
        "after_job_end": job_ended,
        "job_serializer": serialize,
        # Reads each job, and binds its name and its request's id to the try's logs.
        "job_deserializer": read_job,
        # Tasks one worker runs at once; scale out with more workers for more.
        "max_jobs": settings.worker_max_jobs,
        # A task still running after this many seconds is cancelled (per task: TaskSpec).
        "job_timeout": settings.worker_job_timeout_s,
        # How long a result (and its task id) stays readable.
        "keep_result": settings.worker_keep_result_s,
        # Seconds between queue polls: arq's 0.5 s default delays every task ~250 ms.
        "poll_delay": settings.worker_poll_delay_s,
        # Tries per task, the first included (arq's default is 5).
        "max_tries": settings.worker_max_tries,
        # Heartbeat period: `arq --check` only sees a worker within it (arq's default: 1 h).
        "health_check_interval": settings.worker_health_check_interval_s,
        # DELETE /api/v1/tasks/{task_id} cancels running tasks.
        "allow_abort_jobs": True,
        # On SIGTERM, running tasks get this long to finish; no new ones start.
        "job_completion_wait": round(settings.worker_job_completion_wait_s),
    }


_settings = get_settings()
SPECS = {spec.name: spec for spec in TASKS}


class UnknownTaskError(ValueError):
    """`enqueue_task` of a name that no task of tasks/registry.py has."""


async def enqueue_task(name: str, /, *args: Any, **kwargs: Any) -> str | None:
    """`await enqueue_task("example_task", message="hi")`: `TaskQueue.enqueue` (and, with
    `session=`, on commit) for a task of the registry, on its own queue unless `_queue_name`
    says otherwise. A name the registry does not list is refused, naming those it does: a
    worker could only dead-letter it."""
    spec = SPECS.get(name)
    if spec is None:
        known = ", ".join(sorted(SPECS))
        raise UnknownTaskError(f"No task is named {name!r}; the registry lists: {known}.")
    if spec.queue == "slow":
        kwargs.setdefault("_queue_name", _settings.slow_task_queue)
    return await enqueue_on_queue(name, *args, **kwargs)


WorkerSettings = worker_settings(_settings, queue=_settings.task_queue, with_cron=True)
SlowWorkerSettings = worker_settings(_settings, queue=_settings.slow_task_queue, with_cron=False)
SETTINGS_BY_QUEUE = {"default": WorkerSettings, "slow": SlowWorkerSettings}


def run_worker(queue: str, *, burst: bool = False, verbose: bool = False) -> None:
    """Run a worker of `queue` ("default" or "slow") until SIGINT or SIGTERM (with `burst`,
    until the queue is empty)."""
    configure_logging(_settings, verbose=verbose)
    configure_tracing("{{ cookiecutter.project_slug }}")
    use_uvloop()
    Worker(**SETTINGS_BY_QUEUE[queue], burst=burst).run()


def use_uvloop() -> None:
    """Run the worker on uvloop, as uvicorn runs the API, where it is installed (it comes with
    uvicorn[standard], except on Windows): its event loop costs less per task."""
    try:
        import uvloop
    except ImportError:
        return
    asyncio.set_event_loop(uvloop.new_event_loop())


def check_worker(queue: str) -> int:
    """0 while a worker of `queue` sends its own heartbeats, else 1 (also while Redis is out
    of reach). Each worker beats for itself: one that stops, as in a rolling deploy, never
    makes its queue look dead while another lives (arq's one key per queue did)."""
    return asyncio.run(_check(SETTINGS_BY_QUEUE[queue]["queue_name"], host=None))


def check_this_host(queue: str) -> int:
    """0 while a worker of `queue` on this host (this pod, this container) sends heartbeats,
    else 1: a liveness probe that fails for a stuck worker, not for its whole queue. With
    Redis out of reach it cannot tell, and passes: restarting would not bring Redis back."""
    return asyncio.run(_check(SETTINGS_BY_QUEUE[queue]["queue_name"], host=socket.gethostname()))


async def _check(queue_name: str, *, host: str | None) -> int:
    pool = open_queue_pool(_settings)
    alive_s = 2 * _settings.worker_health_check_interval_s + 1
    try:
        metrics = TaskMetricsStore(pool)
        alive = await metrics.alive_on(queue_name, host, alive_s=alive_s)
    except UNAVAILABLE_ERRORS as exc:
        if host is None:
            print(f"Redis is out of reach ({exc}): no worker can be seen.")
            return 1
        print(f"Redis is out of reach ({exc}): passing, as a restart would not help.")
        return 0
    finally:
        await close_redis(pool)
    if not alive:
        where = f" on {host}" if host else ""
        print(f"No heartbeat of a {queue_name} worker{where} in {alive_s:g} s.")
    return 0 if alive else 1
