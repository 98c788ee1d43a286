"""GET /metrics: Prometheus text that a Prometheus parser reads, with the numbers workers wrote."""

import asyncio
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.infrastructure.task_metrics import (
    Histogram,
    TaskMetrics,
)
from {{ cookiecutter.__package_name }}.infrastructure.tasks import as_worker_function
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.services.metrics import render
from {{ cookiecutter.__package_name }}.settings import Settings
from {{ cookiecutter.__package_name }}.tasks.registry import TASKS, TaskSpec

from .support import TEST_KEY, serve


async def breaks(ctx: dict[str, Any]) -> None:
    raise RuntimeError("always")


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_report_depths_outcomes_and_durations(
    client: httpx.AsyncClient,
    task_queue: TaskQueue,
    settings: Settings,
    make_worker: Callable[..., Worker],
) -> None:
    """It counts waiting tasks per queue, and each try by task and outcome with its duration."""
    await task_queue.enqueue("example_task", message="a", steps=1, delay_s=0)
    await task_queue.enqueue("example_task", message="b", steps=1, delay_s=0)
    await task_queue.enqueue("breaks")
    before = samples((await client.get("/metrics")).text)
    assert before[("tasks_queue_depth", (("queue", settings.task_queue),))] == 3
    assert before[("tasks_queue_depth", (("queue", settings.slow_task_queue),))] == 0
    assert before[("tasks_in_progress", ())] == 0

    functions = [as_worker_function(spec, settings) for spec in (*TASKS, TaskSpec(breaks))]
    await make_worker(functions=functions).main()
    response = await client.get("/metrics")
    assert response.headers["content-type"] == CONTENT_TYPE_LATEST
    after = samples(response.text)
    tries = settings.worker_max_tries
    assert after[("tasks_queue_depth", (("queue", settings.task_queue),))] == 0
    assert after[("tasks_total", (("outcome", "complete"), ("task", "example_task")))] == 2
    assert after[("tasks_total", (("outcome", "retried"), ("task", "breaks")))] == tries - 1
    assert after[("tasks_total", (("outcome", "failed"), ("task", "breaks")))] == 1
    assert after[("tasks_duration_seconds_count", (("task", "example_task"),))] == 2
    assert after[("tasks_duration_seconds_bucket", (("le", "+Inf"), ("task", "breaks")))] == tries
    cumulative = [
        value
        for _, value in sorted(
            (float(dict(labels)["le"]), value)
            for (name, labels), value in after.items()
            if name == "tasks_duration_seconds_bucket" and ("task", "example_task") in labels
        )
    ]
    assert cumulative == sorted(cumulative)
    assert cumulative[-1] == 2
    # Submissions by task, each try's wait from due to start by queue, dead letters.
    assert after[("tasks_submitted_total", (("task", "example_task"),))] == 2
    assert after[("tasks_submitted_total", (("task", "breaks"),))] == 1
    queue = (("queue", settings.task_queue),)
    assert after[("tasks_pickup_latency_seconds_count", queue)] == 2 + tries
    assert after[("tasks_pickup_latency_seconds_bucket", (("le", "+Inf"), *queue))] == 2 + tries
    assert after[("tasks_pickup_latency_seconds_sum", queue)] >= 0
    assert after[("tasks_dead_letters", ())] == 1


async def commands_served(task_queue: TaskQueue) -> int:
    """How many commands the Redis server has run, all clients together."""
    stats = await task_queue.pool.info("commandstats")
    return sum(int(entry["calls"]) for entry in stats.values())


async def test_a_scrape_costs_the_same_few_commands_however_many_keys_redis_holds(
    client: httpx.AsyncClient, task_queue: TaskQueue
) -> None:
    """The metrics come from counters and the queues' sorted sets, never from walking the
    keyspace: with 100,000 finished tasks' results in Redis a scrape runs as many commands
    as with none."""

    async def scrape_cost() -> int:
        before = await commands_served(task_queue)
        assert (await client.get("/metrics")).status_code == 200
        return await commands_served(task_queue) - before

    await scrape_cost()  # the first scrape loads the scripts
    empty = await scrape_cost()
    for start in range(0, 100_000, 10_000):
        async with task_queue.pool.pipeline(transaction=False) as pipe:
            for n in range(start, start + 10_000):
                pipe.set(f"arq:result:finished-{n}", b"done", ex=600)
            await pipe.execute()
    assert await task_queue.pool.dbsize() >= 100_000
    assert await scrape_cost() == empty
    assert empty < 50


async def test_live_workers_are_counted_per_queue(
    client: httpx.AsyncClient, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    """A worker counts as live from its first heartbeat until it stops; each queue apart."""

    async def alive() -> dict[str, float]:
        found = samples((await client.get("/metrics")).text)
        return {
            dict(labels)["queue"]: value
            for (name, labels), value in found.items()
            if name == "tasks_workers_alive"
        }

    assert await alive() == {settings.task_queue: 0, settings.slow_task_queue: 0}
    worker = make_worker(burst=False)
    running = asyncio.create_task(worker.async_run())
    try:
        for _ in range(200):
            if (await alive())[settings.task_queue] == 1:
                break
            await asyncio.sleep(0.02)
        assert await alive() == {settings.task_queue: 1, settings.slow_task_queue: 0}
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await worker.close()
    assert await alive() == {settings.task_queue: 0, settings.slow_task_queue: 0}


async def test_with_a_metrics_token_only_its_bearer_reads_the_metrics(settings: Settings) -> None:
    """It answers 401 with WWW-Authenticate to a scraper without METRICS_TOKEN, or with
    another credential (an operator's API key included), and the metrics to one bearing it."""
    token = "a-long-metrics-token-for-tests"
    settings = settings.model_copy(update={"metrics_token": SecretStr(token)})
    async with serve(create_app(settings), key=None) as client:
        for credential in (None, "wrong", TEST_KEY, token[:-1]):
            headers = {"Authorization": f"Bearer {credential}"} if credential else {}
            refused = await client.get("/metrics", headers=headers)
            assert refused.status_code == 401, credential
            assert refused.headers["WWW-Authenticate"] == "Bearer"
            assert "METRICS_TOKEN" in refused.json()["detail"]
        allowed = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
        assert allowed.status_code == 200
        assert "tasks_queue_depth" in allowed.text


def test_a_short_metrics_token_is_refused() -> None:
    with pytest.raises(ValueError, match="METRICS_TOKEN must be at least 16 characters"):
        Settings(metrics_token="short", _env_file=None)
    assert Settings(metrics_token="", _env_file=None).metrics_token is None


def test_the_documented_queries_name_only_exported_metrics(settings: Settings) -> None:
    """Every metric a PromQL query of docs/observability.md names is one /metrics exports."""
    page = (Path(__file__).resolve().parent.parent / "docs/observability.md").read_text()
    queries = re.findall(r"```promql\n(.*?)```", page, re.DOTALL)
    queries += re.findall(r"`((?:sum|histogram_quantile)\(.*?)`", page)
    assert len(queries) >= 6
    empty = TaskMetrics(
        depths={"q": 0},
        in_progress=0,
        outcomes={("t", "complete"): 0},
        durations={"t": Histogram({1.0: 0}, 0.0, 0)},
        submissions={"t": 0},
        pickups={"q": Histogram({1.0: 0}, 0.0, 0)},
        dead_letters=0,
        workers={"q": 0},
    )
    exported = {
        sample.name
        for family in text_string_to_metric_families(render(empty).decode())
        for sample in family.samples
    }
    for query in queries:
        for name in re.findall(r"\btasks_[a-z_]+", query):
            assert name in exported, (name, query)
