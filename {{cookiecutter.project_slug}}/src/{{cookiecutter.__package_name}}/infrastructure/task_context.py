"""What a task carries from the request that enqueued it to every worker that runs it.

arq stores a job as an object: name (`f`), args (`a`), kwargs (`k`), try (`t`), enqueue
time (`et`). Ours adds `m`, the enqueuing side's context: the `request_id` of the request
that enqueued it, and its trace context when traces are exported (`traceparent`). arq reads
only the keys it knows, so tasks from plain arq clients, or enqueued before `m` existed, run
as ever, without it.

In the worker, each try runs in its own asyncio task whose log context holds `task_id`,
`queue` and `try` (`task_log_context`), then `task_name` and the enqueuing `request_id` once
the job is read (`read_job`, the worker's job deserializer).
"""

import contextvars
from typing import Any

from opentelemetry import context, propagate
from structlog.contextvars import bind_contextvars

from .. import tracing
from ..logs import REQUEST_ID
from .serialization import deserialize, serialize

META_KEY = "m"
Meta = dict[str, str]


def current_meta() -> Meta:
    """The context of the code enqueuing now, to travel with its task: its request id and,
    when traces are exported, its trace context (`traceparent`)."""
    meta: Meta = {}
    request_id = REQUEST_ID.get()
    if request_id is not None:
        meta["request_id"] = request_id
    if tracing.enabled():
        propagate.inject(meta)
    return meta


def job_payload(
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    job_try: int | None,
    enqueued_ms: int,
    meta: Meta,
) -> bytes:
    """The job as arq's `serialize_job` writes it, plus `meta`. Raises TypeError for
    arguments that are not JSON."""
    job: dict[str, Any] = {"t": job_try, "f": name, "a": args, "k": kwargs, "et": enqueued_ms}
    if meta:
        job[META_KEY] = meta
    return serialize(job)


def task_log_context(task_id: str, queue: str, job_try: int) -> contextvars.Context:
    """A copy of the current context in which to run one try: its logs name the task."""
    context = contextvars.copy_context()
    context.run(bind_contextvars, task_id=task_id, queue=queue, **{"try": job_try})
    return context


def read_job(data: bytes) -> Any:
    """Read a job as `deserialize` does, and bind its name and what came with it to the logs
    of the try being started (the worker reads each job inside that try's task)."""
    job = deserialize(data)
    if isinstance(job, dict):
        meta = job.get(META_KEY)
        meta = meta if isinstance(meta, dict) else {}
        bind_contextvars(task_name=job.get("f"))
        if isinstance(meta.get("request_id"), str):
            REQUEST_ID.set(meta["request_id"])  # its logs, and the tasks it enqueues
        if tracing.enabled():
            # The try's spans become children of the enqueuing span (tracing.task_span).
            context.attach(propagate.extract(meta))
    return job
