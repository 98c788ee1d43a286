"""Traces as a collector receives them: real processes export over OTLP/HTTP to a receiver the
test starts{% if cookiecutter.cache_backend != "none" %}, and a request's trace goes on in the worker that runs its task{% endif %}."""

{% if cookiecutter.cache_backend != "none" -%}
import asyncio
{% endif -%}
import os
import secrets
{%- if cookiecutter.cache_backend != "none" %}
import sys
{%- endif %}
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.sdk.trace import TracerProvider

from {{ cookiecutter.__package_name }} import tracing
{% if cookiecutter.cache_backend != "none" -%}
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
{% endif -%}
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings
from {{ cookiecutter.__package_name }}.tracing import TracingSettingsError, configure_tracing
{%- if cookiecutter.cache_backend != "none" %}

from .support import (
    PROCESS_DEADLINE_S,
    TEST_API_KEY,
    TEST_KEY,
    api_command,
    bearer,
    free_port,
    running,
    wait_until_live,
)
{%- else %}

from .support import PROCESS_DEADLINE_S, api_command, free_port, running, wait_until_live
{%- endif %}


@dataclass(frozen=True)
class Span:
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    instance: str  # the process that made it (service.instance.id)
    service: str


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1, as a collector's: it keeps what it gets."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        received = self.spans

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                request = ExportTraceServiceRequest.FromString(body)
                for resource_spans in request.resource_spans:
                    resource = {
                        item.key: item.value.string_value
                        for item in resource_spans.resource.attributes
                    }
                    for scope_spans in resource_spans.scope_spans:
                        received.extend(
                            Span(
                                span.name,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                resource["service.instance.id"],
                                resource["service.name"],
                            )
                            for span in scope_spans.spans
                        )
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def named(self, name: str) -> list[Span]:
        return [span for span in self.spans if span.name == name]

    def wait_for(self, *names: str) -> None:
        deadline = time.monotonic() + PROCESS_DEADLINE_S
        while not all(self.named(name) for name in names):
            assert time.monotonic() < deadline, (names, self.spans)
            time.sleep(0.05)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    thread = threading.Thread(target=started.server.serve_forever, daemon=True)
    thread.start()
    yield started
    started.server.shutdown()
    started.server.server_close()


def traced_environment(receiver: Receiver, **settings: str) -> dict[str, str]:
    return {
        **os.environ,
        "ENVIRONMENT": "test",
        "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
        "OTEL_SERVICE_NAME": "traced-service",
        "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms between batches: the test waits less
        **settings,
    }


def ancestors(span: Span, spans: list[Span]) -> list[Span]:
    by_id = {each.span_id: each for each in spans}
    found: list[Span] = []
    while span.parent_id in by_id:
        span = by_id[span.parent_id]
        found.append(span)
    return found


def caller_trace() -> tuple[str, str, str]:
    """A `traceparent` header of a caller's span, with its trace and span ids."""
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    return f"00-{trace_id}-{span_id}-01", trace_id, span_id
{%- if cookiecutter.cache_backend != "none" %}


async def test_one_trace_from_the_request_to_the_task_s_try_in_the_worker(
    settings: Settings, task_queue: TaskQueue, receiver: Receiver, tmp_path: Path
) -> None:
    """The API's span for `POST /api/v1/tasks` continues the caller's trace; in the worker,
    another process, the task's wait and its try are children of that span. A task enqueued
    without a trace (a plain client) still runs, in a trace of its own."""
    env = traced_environment(
        receiver,
        REDIS_URL=str(settings.redis_url),
{%- if cookiecutter.__database == "postgres" %}
        DATABASE_URL=settings.database_url.get_secret_value(),
{%- endif %}
        API_KEYS=TEST_API_KEY.entry,
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    worker = [sys.executable, "-m", "{{ cookiecutter.__package_name }}.worker"]
    traceparent, trace_id, caller_span = caller_trace()
    with (
        running(api_command(port), env, tmp_path / "api.log"),
        running(worker, env, tmp_path / "worker.log"),
    ):
        wait_until_live(base, tmp_path / "api.log")
        headers = {**bearer(TEST_KEY), "traceparent": traceparent}
        body = {"name": "example_task", "args": {"message": "traced", "steps": 1, "delay_s": 0}}
        async with httpx.AsyncClient(base_url=base) as http:
            submitted = await http.post("/api/v1/tasks", json=body, headers=headers)
        assert submitted.status_code == 202, submitted.text
        # As a plain client would: no context travels with this one.
        plain = await task_queue.enqueue("example_task", message="plain", steps=1, delay_s=0)
        for task_id in (submitted.json()["task_id"], plain):
            deadline = time.monotonic() + PROCESS_DEADLINE_S
            while (state := await task_queue.state(str(task_id))) is None or not state.finished:
                assert time.monotonic() < deadline, (tmp_path / "worker.log").read_text()
                await asyncio.sleep(0.05)
            assert state.status == "complete"
        receiver.wait_for("POST /api/v1/tasks", "task example_task", "task wait")
        deadline = time.monotonic() + PROCESS_DEADLINE_S
        while len(receiver.named("task example_task")) < 2:
            assert time.monotonic() < deadline, receiver.spans
            await asyncio.sleep(0.05)
    [request] = [span for span in receiver.named("POST /api/v1/tasks") if span.trace_id == trace_id]
    assert request.parent_id == caller_span
    tries = [span for span in receiver.named("task example_task") if span.trace_id == trace_id]
    waits = [span for span in receiver.named("task wait") if span.trace_id == trace_id]
    assert len(tries) == 1
    assert len(waits) == 1
    for span in (*tries, *waits):
        assert request in ancestors(span, receiver.spans)  # through the endpoint's span
        assert span.instance != request.instance  # made by the worker's process
        assert span.service == "traced-service"
    [other] = [span for span in receiver.named("task example_task") if span.trace_id != trace_id]
    assert other.parent_id == ""  # the plain client's task: a trace of its own
{%- else %}


def test_the_request_span_continues_the_caller_s_trace(receiver: Receiver, tmp_path: Path) -> None:
    """The API's span for a request is a child of the caller's, named by its route."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    traceparent, trace_id, caller_span = caller_trace()
    with running(api_command(port), traced_environment(receiver), tmp_path / "api.log"):
        wait_until_live(base, tmp_path / "api.log")
        httpx.get(f"{base}/health/ready", headers={"traceparent": traceparent})
        receiver.wait_for("GET /health/ready")
    [span] = [span for span in receiver.named("GET /health/ready") if span.trace_id == trace_id]
    assert span.parent_id == caller_span
    assert span.service == "traced-service"
{%- endif %}


def test_without_an_endpoint_nothing_is_set_up(settings: Settings) -> None:
    """No OTEL_EXPORTER_OTLP_ENDPOINT: no tracer provider, so no span is made anywhere."""
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in os.environ
    create_app(settings)
    assert not tracing.enabled()
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


def test_a_protocol_other_than_http_protobuf_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The service ships the OTLP/HTTP exporter; asked for gRPC it says so, at start-up."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4317")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    with pytest.raises(TracingSettingsError, match="OTEL_EXPORTER_OTLP_PROTOCOL=grpc"):
        configure_tracing("test")
