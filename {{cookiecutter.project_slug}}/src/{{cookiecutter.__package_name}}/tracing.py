"""Traces with OpenTelemetry, configured by its standard variables.

With `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) set, spans go to
that collector over OTLP/HTTP with protobuf; `OTEL_SERVICE_NAME` names the service, and the
SDK's other variables apply as it reads them (headers, timeouts, `OTEL_TRACES_SAMPLER`...).
With neither set, or `OTEL_SDK_DISABLED=true`, nothing is set up and no span is made.
FastAPI makes a span for each request (continuing the caller's `traceparent`) and for its
dependencies, endpoint and serialization, as soon as a tracer provider is set here.
{%- if cookiecutter.cache_backend != "none" %}

A request's trace continues in the worker: its context travels with each task it enqueues
(`infrastructure/task_context.py`), and each try of the task is a span in that trace, after a
span for the time the task waited on its queue.
{%- endif %}
"""

import os
import socket
{%- if cookiecutter.cache_backend != "none" %}
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractContextManager, nullcontext
from functools import wraps
from typing import Any
{%- endif %}

from opentelemetry import trace

ENDPOINT_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
PROTOCOL_VARIABLES = ("OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
PROTOCOL = "http/protobuf"
tracer = trace.get_tracer("{{ cookiecutter.__package_name }}")
_enabled = False


class TracingSettingsError(ValueError):
    """An OTEL_* variable asks for what this service cannot do."""


def enabled() -> bool:
    """Whether this process exports traces."""
    return _enabled


def configure_tracing(default_service_name: str) -> None:
    """Export this process's spans when the variables ask for it; once per process."""
    global _enabled  # one tracer provider per process, as OpenTelemetry has it
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return
    if not any(os.environ.get(name) for name in ENDPOINT_VARIABLES):
        return
    for name in PROTOCOL_VARIABLES:
        protocol = os.environ.get(name)
        if protocol and protocol != PROTOCOL:
            raise TracingSettingsError(
                f"{name}={protocol} is not supported: this service exports traces over "
                f"OTLP/HTTP; set it to {PROTOCOL}, or leave it unset."
            )
    if _enabled:
        return
    # The SDK and the exporter are loaded only here: a process that exports nothing carries
    # neither (fewer objects for the garbage collector to walk, on every request).
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    attributes = {SERVICE_INSTANCE_ID: f"{socket.gethostname()}:{os.getpid()}"}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes[SERVICE_NAME] = default_service_name
    provider = TracerProvider(resource=Resource.create(attributes))
    # Spans leave in batches, off the request's path; the rest go at exit.
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _enabled = True
{%- if cookiecutter.cache_backend != "none" %}


TaskFunction = Callable[..., Awaitable[Any]]


def traced(function: TaskFunction) -> TaskFunction:
    """Run each try of a task in a span of its own (when traces are exported)."""

    @wraps(function)
    async def run(ctx: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        with task_span(function.__name__, ctx):
            return await function(ctx, *args, **kwargs)

    return run


def task_span(name: str, ctx: dict[str, Any]) -> AbstractContextManager[object]:
    """A span for the try about to run, after one for how long it waited on its queue (from
    the time it was due). Both are children of the enqueuing request's span when its context
    came with the task, else of no span."""
    if not _enabled:
        return nullcontext()
    attributes = {"task.id": ctx["job_id"], "task.name": name, "task.try": ctx["job_try"]}
    due_ms = ctx.get("score")
    if isinstance(due_ms, int) and due_ms > 0:
        wait = tracer.start_span("task wait", start_time=due_ms * 1_000_000, attributes=attributes)
        wait.end(end_time=max(time.time_ns(), due_ms * 1_000_000))
    return tracer.start_as_current_span(
        f"task {name}", kind=trace.SpanKind.CONSUMER, attributes=attributes
    )
{%- endif %}
