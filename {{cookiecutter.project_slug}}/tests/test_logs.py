"""Logs as a log collector reads them: real processes, every line one JSON object with its
context{% if cookiecutter.cache_backend != "none" %}, a task's lines tied to the request that enqueued it{% endif %}."""

import json
import os
import re
{%- if cookiecutter.cache_backend != "none" %}
import sys
import time
{%- endif %}
from pathlib import Path
from typing import Any

import httpx
import pytest
{%- if cookiecutter.cache_backend != "none" %}

from {{ cookiecutter.__package_name }}.settings import Settings

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

from .support import api_command, free_port, running, wait_until_live
{%- endif %}

HEX_ID = re.compile(r"[0-9a-f]{32}")
REQUEST_ID = "order-42.retry:1"


def read_lines(log: Path) -> list[dict[str, Any]]:
    """Every line of the log, each of which must be a JSON object with the four fields."""
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    for line in lines:
        assert {"time", "level", "logger", "message"} <= set(line), line
    return lines


def environment(**overrides: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key != "LOG_FORMAT"}
    return {**env, **overrides}


def test_the_api_writes_json_lines_with_the_request_id(tmp_path: Path) -> None:
    """Outside development (LOG_FORMAT unset) every line is JSON, uvicorn's included; the
    request's id is taken from X-Request-ID, echoed, and on the access line. An id that could
    forge a log line is replaced by a new one."""
    port, log = free_port(), tmp_path / "api.log"
{%- if cookiecutter.cache_backend != "none" %}
    env = environment(ENVIRONMENT="test", API_KEYS=TEST_API_KEY.entry)
{%- else %}
    env = environment(ENVIRONMENT="test")
{%- endif %}
    base = f"http://127.0.0.1:{port}"
    with running(api_command(port), env, log):
        wait_until_live(base, log)
        given = httpx.get(f"{base}/health/live", headers={"X-Request-ID": REQUEST_ID})
        assert given.headers["X-Request-ID"] == REQUEST_ID
        forged = httpx.get(f"{base}/health/live", headers={"X-Request-ID": "a b\\nfake line"})
        assert HEX_ID.fullmatch(forged.headers["X-Request-ID"])
        made = httpx.get(f"{base}/health/live")
        assert HEX_ID.fullmatch(made.headers["X-Request-ID"])
    lines = read_lines(log)
    access = [line for line in lines if line["logger"] == "uvicorn.access"]
    ids = [line["request_id"] for line in access if "/health/live" in line["message"]]
    assert REQUEST_ID in ids
    assert forged.headers["X-Request-ID"] in ids
    assert made.headers["X-Request-ID"] in ids
    assert any("Application startup complete" in line["message"] for line in lines)


def test_development_writes_readable_lines(tmp_path: Path) -> None:
    """In development the same records are lines for people, with the request id as
    `request_id=...`."""
    port, log = free_port(), tmp_path / "api.log"
    base = f"http://127.0.0.1:{port}"
    with running(api_command(port), environment(ENVIRONMENT="development"), log):
        wait_until_live(base, log)
        httpx.get(f"{base}/health/live", headers={"X-Request-ID": REQUEST_ID})
    text = log.read_text()
    assert f"request_id={REQUEST_ID}" in text
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])
{%- if cookiecutter.cache_backend != "none" %}


def test_a_task_s_lines_carry_the_request_that_enqueued_it(
    settings: Settings, tmp_path: Path
) -> None:
    """The worker's lines for a task name it, its try and queue, and the request id of the
    request that enqueued it, though API and worker are separate processes."""
    port = free_port()
    env = environment(
        ENVIRONMENT="test",
        REDIS_URL=str(settings.redis_url),
{%- if cookiecutter.__database == "postgres" %}
        DATABASE_URL=settings.database_url.get_secret_value(),
{%- endif %}
        API_KEYS=TEST_API_KEY.entry,
    )
    api_log, worker_log = tmp_path / "api.log", tmp_path / "worker.log"
    worker = [sys.executable, "-m", "{{ cookiecutter.__package_name }}.worker"]
    base = f"http://127.0.0.1:{port}"
    with running(api_command(port), env, api_log), running(worker, env, worker_log):
        wait_until_live(base, api_log)
        headers = {**bearer(TEST_KEY), "X-Request-ID": REQUEST_ID}
        body = {"name": "example_task", "args": {"message": "logged", "steps": 1, "delay_s": 0}}
        submitted = httpx.post(f"{base}/api/v1/tasks", json=body, headers=headers)
        assert submitted.status_code == 202, submitted.text
        task_id = submitted.json()["task_id"]
        status_url = f"{base}{submitted.headers['Location']}"
        deadline = time.monotonic() + PROCESS_DEADLINE_S
        while httpx.get(status_url, headers=headers).json()["status"] != "complete":
            assert time.monotonic() < deadline, worker_log.read_text()
            time.sleep(0.05)
    posted = [
        line
        for line in read_lines(api_log)
        if line["logger"] == "uvicorn.access" and "POST /api/v1/tasks" in line["message"]
    ]
    assert [line["request_id"] for line in posted] == [REQUEST_ID]
    of_task = [line for line in read_lines(worker_log) if line.get("task_id") == task_id]
    assert len(of_task) >= 2, worker_log.read_text()  # arq's start and end of the try
    for line in of_task:
        assert line["logger"] == "arq.worker"
        assert line["request_id"] == REQUEST_ID
        assert line["task_name"] == "example_task"
        assert line["queue"] == settings.task_queue
    assert of_task[-1]["try"] == 1
{%- endif %}
