"""The task HTTP API on a real Redis: status codes, bodies, and bad input that changes nothing."""

from typing import Any

import httpx
import pytest
from redis.asyncio import Redis

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import free_port
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import TEST_API_KEY, serve

TASKS = "/api/v1/tasks"
TESTS = TEST_API_KEY.principal


async def queued_count(queue: TaskQueue) -> int:
    return sum([int(await queue.pool.zcard(name)) for name in queue.queues])


async def test_submit_answers_202_with_where_to_follow(
    client: httpx.AsyncClient, task_queue: TaskQueue, redis: Redis
) -> None:
    """It queues the task, in the queue's database, and answers 202 with its id, status and a
    Location to poll."""
    response = await client.post(TASKS, json={"name": "example_task", "args": {"message": "hi"}})
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued"
    assert body["status_url"] == f"{TASKS}/{body['task_id']}"
    assert response.headers["Location"] == body["status_url"]
    state = (await client.get(body["status_url"])).json()
    assert state["status"] == "queued"
    assert state["name"] == "example_task"
    assert [state[key] for key in ("progress", "result", "error", "tries")] == [None, None, None, 0]
    assert state["enqueued_at"] is not None
    assert await queued_count(task_queue) == 1
    assert await redis.keys("*") == []  # the cache's database holds none of it


async def test_deferred_task_reports_deferred(client: httpx.AsyncClient) -> None:
    """It accepts defer_by and reports the task as deferred until its time."""
    body = {"name": "example_task", "args": {"message": "later"}, "defer_by": 60}
    response = await client.post(TASKS, json=body)
    assert response.status_code == 202
    assert response.json()["status"] == "deferred"
    state = (await client.get(response.headers["Location"])).json()
    assert state["status"] == "deferred"


async def test_same_task_id_twice_is_409(client: httpx.AsyncClient, task_queue: TaskQueue) -> None:
    """It enqueues a task id once; the second submission is a 409 the client can detect."""
    body = {"name": "example_task", "args": {"message": "once"}, "task_id": "order-42"}
    first = await client.post(TASKS, json=body)
    second = await client.post(TASKS, json=body)
    assert first.status_code == 202
    assert first.json()["task_id"] == f"{TESTS.tag}.order-42"  # the submitter's tag, then it
    assert second.status_code == 409
    assert "order-42" in second.json()["detail"]
    assert await queued_count(task_queue) == 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"name": "rm_rf", "args": {}}, "Unknown task"),
        ({"name": "example_task", "args": {}}, "message"),
        ({"name": "example_task", "args": {"message": "x", "steps": 0}}, "steps"),
        ({"name": "example_task", "args": {"message": "x", "extra": 1}}, "extra"),
        (
            {"name": "example_task", "args": {"message": "x", "steps": 100, "delay_s": 1}},
            "past the task's 60 s timeout",
        ),
        ({"name": "example_task", "args": {"message": ["not", "a", "string"]}}, "message"),
        ({"name": 7, "args": {}}, "name"),
        ({"name": "example_task", "args": "message"}, "args"),
        ({"name": "example_task", "args": {"message": "x"}, "defer_by": -1}, "defer_by"),
        ({"name": "example_task", "args": {"message": "x"}, "defer_by": 1e12}, "defer_by"),
        ({"name": "example_task", "args": {"message": "x"}, "task_id": "a b"}, "task_id"),
        ({"name": "example_task", "args": {"message": "x"}, "task_id": "../x"}, "task_id"),
        ({"name": "example_task", "args": {"message": "x"}, "task_id": "x" * 200}, "task_id"),
        ({"name": "example_task", "args": {"message": "x"}, "priority": 1}, "priority"),
    ],
)
async def test_bad_submissions_are_422_and_change_nothing(
    client: httpx.AsyncClient, task_queue: TaskQueue, body: dict[str, Any], expected: str
) -> None:
    """It refuses unknown tasks, bad arguments, bad defer values and odd ids, enqueuing nothing."""
    response = await client.post(TASKS, json=body)
    assert response.status_code == 422
    assert expected in str(response.json()["detail"])
    assert await queued_count(task_queue) == 0


@pytest.mark.parametrize("number", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_are_422(
    client: httpx.AsyncClient, task_queue: TaskQueue, number: str
) -> None:
    """It refuses NaN and Infinity (which the parser lets through) with 422, not 500."""
    body = '{"name": "example_task", "args": {"message": "x"}, "defer_by": ' + number + "}"
    response = await client.post(TASKS, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "defer_by" in str(response.json()["detail"])
    assert await queued_count(task_queue) == 0


async def test_malformed_json_is_422(client: httpx.AsyncClient, task_queue: TaskQueue) -> None:
    """It answers a body that is not JSON with 422, not 500."""
    response = await client.post(
        TASKS, content=b'{"name": "example_task",', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert await queued_count(task_queue) == 0


async def test_oversized_bodies_are_413(
    client: httpx.AsyncClient, settings: Settings, task_queue: TaskQueue
) -> None:
    """It refuses a body over API_MAX_BODY_BYTES, declared or streamed without a length."""
    message = "x" * (settings.api_max_body_bytes + 1)
    declared = await client.post(TASKS, json={"name": "example_task", "args": {"message": message}})
    assert declared.status_code == 413

    async def chunks() -> Any:
        for _ in range(settings.api_max_body_bytes // 1024 + 2):
            yield b" " * 1024

    headers = {"Content-Type": "application/json"}
    streamed = await client.post(TASKS, content=chunks(), headers=headers)
    assert streamed.status_code == 413
    assert "larger than" in streamed.json()["detail"]
    assert await queued_count(task_queue) == 0


async def test_unknown_and_odd_task_ids(client: httpx.AsyncClient) -> None:
    """It answers 404 for an id it never saw, and 422 for an id it could never have issued."""
    missing = await client.get(f"{TASKS}/no-such-task")
    assert missing.status_code == 404
    assert "no-such-task" in missing.json()["detail"]
    assert (await client.get(f"{TASKS}/bad%20id")).status_code == 422
    assert (await client.delete(f"{TASKS}/no-such-task")).status_code == 404


async def test_cancelling_a_queued_task_records_it_aborted(
    client: httpx.AsyncClient, task_queue: TaskQueue
) -> None:
    """It takes a queued task off the queue at once; cancelling it again is a 409."""
    submitted = await client.post(TASKS, json={"name": "example_task", "args": {"message": "no"}})
    url = submitted.headers["Location"]
    cancelled = await client.delete(url)
    assert cancelled.status_code == 202
    assert cancelled.json() == {"task_id": submitted.json()["task_id"], "status": "aborted"}
    state = (await client.get(url)).json()
    assert state["status"] == "aborted"
    assert state["error"]
    assert await queued_count(task_queue) == 0
    again = await client.delete(url)
    assert again.status_code == 409
    assert "aborted" in again.json()["detail"]


async def test_redis_down_gives_503_with_retry_after(redis: Redis) -> None:
    """It answers 503 with Retry-After, never 500, while the server is unreachable."""
    settings = Settings(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_connect_timeout_s=0.5,
        environment="test",
        api_keys=[TEST_API_KEY],
        _env_file=None,
    )
    app = create_app(settings)
    async with serve(app) as client:
        body = {"name": "example_task", "args": {"message": "x"}}
        submitted = await client.post(TASKS, json=body)
        looked_up = await client.get(f"{TASKS}/some-id")
    for response in (submitted, looked_up):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "5"
        assert "unreachable" in response.json()["detail"]


async def test_a_full_queue_sheds_submissions_with_503_and_retry_after(
    settings: Settings, task_queue: TaskQueue
) -> None:
    """It accepts submissions until the queue holds TASK_MAX_QUEUE_DEPTH tasks, then answers
    503 with Retry-After and queues nothing; a duplicate id is still a 409; once the queue
    has room again, submissions are accepted."""
    settings = settings.model_copy(update={"task_max_queue_depth": 2})
    body: dict[str, Any] = {"name": "example_task", "args": {"message": "m"}}
    async with serve(create_app(settings)) as client:
        for task_id in ("first", "second"):
            accepted = await client.post(TASKS, json={**body, "task_id": task_id})
            assert accepted.status_code == 202
        shed = await client.post(TASKS, json={**body, "task_id": "third"})
        assert shed.status_code == 503
        assert int(shed.headers["Retry-After"]) > 0
        assert "full" in shed.json()["detail"]
        assert (await client.get(f"{TASKS}/{TESTS.tag}.third")).status_code == 404
        assert (await client.post(TASKS, json={**body, "task_id": "first"})).status_code == 409
        assert await queued_count(task_queue) == 2
        assert (await client.delete(f"{TASKS}/{TESTS.tag}.first")).status_code == 202
        assert (await client.post(TASKS, json={**body, "task_id": "third"})).status_code == 202
