"""Tasks that fail for good are dead-lettered, then listed and retried over HTTP by operators
(keys with the operator scope) only."""

import asyncio
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

import httpx
import pytest
from arq.constants import result_key_prefix
from arq.worker import Worker
from redis.asyncio.client import PubSub

from {{ cookiecutter.__package_name }}.access import create_key
from {{ cookiecutter.__package_name }}.infrastructure.dead_letters import (
    DEAD_LETTER_PREFIX,
)
from {{ cookiecutter.__package_name }}.infrastructure.events import events_channel
from {{ cookiecutter.__package_name }}.infrastructure.queue import (
    NonRetryableError,
    TaskQueue,
    retry_letter_keys,
)
from {{ cookiecutter.__package_name }}.infrastructure.tasks import as_worker_function
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.services.console import ConsoleService
from {{ cookiecutter.__package_name }}.settings import Settings
from {{ cookiecutter.__package_name }}.tasks.registry import TaskSpec

from .support import TEST_KEY, bearer, serve

FAILED = "/api/v1/tasks?status=failed"
healthy = {"upstream": False}


async def charge_card(ctx: dict[str, Any], order: str, cents: int) -> str:
    if not healthy["upstream"]:
        raise ConnectionError(f"payment provider down while charging {order}")
    return f"charged {order}"


async def refuses(ctx: dict[str, Any]) -> None:
    raise NonRetryableError("the card number is invalid")


async def hangs(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(30)


async def next_event(pubsub: PubSub) -> dict[str, Any]:
    async with asyncio.timeout(10):
        while True:  # get_message answers None for a subscribe confirmation
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
            if message is not None:
                event: dict[str, Any] = json.loads(message["data"])
                return event


@pytest.fixture(autouse=True)
def upstream_down() -> None:
    healthy["upstream"] = False


@pytest.fixture
def run_worker(settings: Settings, make_worker: Callable[..., Worker]) -> Callable[[], Any]:
    specs = (TaskSpec(charge_card, max_tries=2), TaskSpec(refuses), TaskSpec(hangs, timeout_s=0.2))
    functions = [as_worker_function(spec, settings) for spec in specs]
    return lambda: make_worker(functions=functions).main()


async def test_a_task_that_exhausts_its_tries_is_listed_then_retried(
    client: httpx.AsyncClient, task_queue: TaskQueue, run_worker: Callable[[], Any]
) -> None:
    task_id = await task_queue.enqueue("charge_card", order="A-17", cents=1299)
    assert task_id
    await run_worker()
    [letter] = (await client.get(FAILED)).json()
    assert letter["task_id"] == task_id
    assert (letter["name"], letter["args"], letter["tries"]) == (
        "charge_card",
        {"order": "A-17", "cents": 1299},
        2,
    )
    assert letter["error"] == "ConnectionError: payment provider down while charging A-17"
    assert "in charge_card" in letter["traceback"]
    assert letter["traceback"].rstrip().endswith(letter["error"])
    assert letter["queue"] == task_queue.settings.task_queue
    enqueued_at = datetime.fromisoformat(letter["enqueued_at"])
    assert enqueued_at <= datetime.fromisoformat(letter["failed_at"])

    healthy["upstream"] = True
    retried = await client.post(f"/api/v1/tasks/{task_id}/retry")
    assert retried.status_code == 202
    accepted = retried.json()
    assert (accepted["task_id"], accepted["status"]) == (task_id, "queued")
    assert accepted["status_url"] == f"/api/v1/tasks/{task_id}"
    assert accepted["events_url"].startswith(f"/api/v1/tasks/{task_id}/events?token=")
    assert retried.headers["Location"] == f"/api/v1/tasks/{task_id}"
    assert (await client.get(FAILED)).json() == []
    await run_worker()
    state = (await client.get(f"/api/v1/tasks/{task_id}")).json()
    assert (state["status"], state["result"], state["tries"]) == ("complete", "charged A-17", 1)


async def test_non_retryable_errors_and_timeouts_are_dead_lettered(
    client: httpx.AsyncClient, task_queue: TaskQueue, run_worker: Callable[[], Any]
) -> None:
    refused = await task_queue.enqueue("refuses")
    timed_out = await task_queue.enqueue("hangs")
    await run_worker()
    letters = {letter["task_id"]: letter for letter in (await client.get(FAILED)).json()}
    assert set(letters) == {refused, timed_out}
    assert letters[refused]["error"] == "NonRetryableError: the card number is invalid"
    assert letters[refused]["tries"] == 1
    assert letters[timed_out]["error"].startswith("TaskTimeoutError: hangs timed out after 0.2 s")
    assert letters[timed_out]["tries"] == 3  # retried like any failure
    assert "TaskTimeoutError" in letters[timed_out]["traceback"]


async def test_tasks_that_fail_before_they_run_are_dead_lettered(
    client: httpx.AsyncClient, task_queue: TaskQueue, run_worker: Callable[[], Any]
) -> None:
    """arq fails some tasks without running them: a name no worker knows (a task renamed while
    some were queued) and a task whose tries were used up by workers that died running it.
    They are listed with the others, and their followers learn how they ended."""
    renamed = await task_queue.enqueue("charge_card_v1", order="C-1", cents=5)
    # charge_card has two tries: a third means two workers died while running it
    crashed = await task_queue.enqueue("charge_card", order="C-2", cents=5, _job_try=3)
    assert renamed
    assert crashed
    async with task_queue.pool.pubsub() as pubsub:
        await pubsub.subscribe(*(events_channel(task_id) for task_id in (renamed, crashed)))
        await run_worker()
        events = [await next_event(pubsub) for _ in range(4)]
    letters = {letter["task_id"]: letter for letter in (await client.get(FAILED)).json()}
    assert set(letters) == {renamed, crashed}
    assert letters[renamed]["name"] == "charge_card_v1"
    assert letters[renamed]["args"] == {"order": "C-1", "cents": 5}
    assert "function 'charge_card_v1' not found" in letters[renamed]["error"]
    assert letters[crashed]["tries"] == 3
    assert "max 2 retries exceeded" in letters[crashed]["error"]
    for task_id in (renamed, crashed):  # claimed, then failed without running
        ends = [event["event"] for event in events if event["task_id"] == task_id]
        assert ends == ["started", "failed"], events


async def test_completed_and_aborted_tasks_are_not_dead_lettered(
    client: httpx.AsyncClient, task_queue: TaskQueue, run_worker: Callable[[], Any]
) -> None:
    healthy["upstream"] = True
    await task_queue.enqueue("charge_card", order="B-1", cents=1)
    aborted = await task_queue.enqueue("charge_card", order="B-2", cents=1)
    assert aborted
    assert (await client.delete(f"/api/v1/tasks/{aborted}")).status_code == 202
    await run_worker()
    assert (await client.get(FAILED)).json() == []


async def test_the_list_keeps_the_newest_and_pages(
    client: httpx.AsyncClient,
    settings: Settings,
    task_queue: TaskQueue,
    make_worker: Callable[..., Worker],
) -> None:
    settings.task_dead_letter_max = 2
    functions = [as_worker_function(TaskSpec(refuses), settings)]
    ids: list[str | None] = []
    for _ in range(3):  # one at a time, so that they fail in this order
        ids.append(await task_queue.enqueue("refuses"))
        await make_worker(functions=functions).main()
    assert [item["task_id"] for item in (await client.get(FAILED)).json()] == ids[:0:-1]
    page = (await client.get(FAILED + "&limit=1&offset=1")).json()
    assert [item["task_id"] for item in page] == [ids[1]]


@pytest.mark.parametrize(
    "query", ["status=complete", "", "status=failed&limit=0", "status=failed&offset=-1"]
)
async def test_bad_queries_get_422(client: httpx.AsyncClient, query: str) -> None:
    reply = await client.get(f"/api/v1/tasks?{query}")
    assert reply.status_code == 422
    assert reply.json()["detail"]


async def test_retrying_a_task_that_is_not_dead_lettered_is_a_404(
    client: httpx.AsyncClient,
) -> None:
    reply = await client.post("/api/v1/tasks/never-failed/retry")
    assert reply.status_code == 404
    assert "never-failed" in reply.json()["detail"]


async def test_only_operators_list_and_retry_dead_letters(
    settings: Settings, task_queue: TaskQueue, run_worker: Callable[[], Any]
) -> None:
    """No key or an unknown one: 401; a key without the operator scope: 403."""
    key, api_key = create_key("reader", ["tasks:read", "tasks:submit", "tasks:cancel"])
    settings = settings.model_copy(update={"api_keys": [*settings.api_keys, api_key]})
    task_id = await task_queue.enqueue("refuses")
    await run_worker()
    async with serve(create_app(settings), key=None) as client:
        for headers, code in (
            ({}, 401),
            (bearer("key_wrong"), 401),
            ({"Authorization": TEST_KEY}, 401),  # no scheme
            (bearer(key), 403),
        ):
            listed = await client.get(FAILED, headers=headers)
            assert listed.status_code == code, headers
            if code == 401:
                assert listed.headers["WWW-Authenticate"] == "Bearer"
            else:
                assert "operator" in listed.json()["detail"]
            retried = await client.post(f"/api/v1/tasks/{task_id}/retry", headers=headers)
            assert retried.status_code == code
        operator = bearer(TEST_KEY)
        state = await client.get(f"/api/v1/tasks/{task_id}", headers=operator)
        assert state.json()["status"] == "failed"  # nothing was retried
        listed = await client.get(FAILED, headers=operator)
        assert [item["task_id"] for item in listed.json()] == [task_id]
        retried = await client.post(f"/api/v1/tasks/{task_id}/retry", headers=operator)
        assert retried.status_code == 202


async def test_a_retry_sent_again_after_a_lost_reply_gives_the_same_answer(
    task_queue: TaskQueue, run_worker: Callable[[], Any]
) -> None:
    """The retry is one script: sent twice (as a client does when the first reply is lost),
    it answers True both times and the task is queued once, the letter gone."""
    task_id = await task_queue.enqueue("refuses")
    assert task_id
    await run_worker()
    raw = await task_queue.pool.get(DEAD_LETTER_PREFIX + task_id)
    assert raw
    assert await task_queue.retry(task_id)
    # What the first call saw, sent again: the note of the retry answers it.
    again = await task_queue._retry_script(  # the same keys and arguments as `retry` sends
        keys=retry_letter_keys(task_id, "refuses", task_queue.settings.task_queue),
        args=[task_id, raw, b"{}", 60_000, "unused", "refuses"],
        client=task_queue.pool,
    )
    assert again == 1
    assert await task_queue.pool.zcard(task_queue.settings.task_queue) == 1
    assert await task_queue.dead_letter_store.count() == 0
    assert not await task_queue.retry(task_id)  # no letter now: nothing to retry


async def test_a_letter_whose_id_a_newer_task_holds_stays(
    task_queue: TaskQueue, run_worker: Callable[[], Any]
) -> None:
    """A task queued again under the letter's id (by its submitter) is not overwritten by a
    retry of the letter: the retry is refused and the letter stays."""
    task_id = await task_queue.enqueue("refuses", _job_id="order-9")
    assert task_id
    await run_worker()
    await task_queue.pool.delete(result_key_prefix + task_id)  # its result expired
    assert await task_queue.enqueue("charge_card", order="B-2", cents=1, _job_id="order-9")
    assert not await task_queue.retry(task_id)
    assert await task_queue.dead_letter_store.count() == 1
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.name, state.status) == ("charge_card", "queued")


async def test_bulk_retry_acts_on_the_letters_present_when_it_started_and_returns(
    settings: Settings, task_queue: TaskQueue, run_worker: Callable[[], Any]
) -> None:
    """Three letters, one of which cannot be retried (its id is taken): retry all of them
    retries two and returns, where re-reading the list until it is empty never ended."""
    ids = [await task_queue.enqueue("refuses", _job_id=f"bulk-{n}") for n in range(3)]
    await run_worker()
    await task_queue.pool.delete(result_key_prefix + "bulk-0")
    assert await task_queue.enqueue("charge_card", order="C-3", cents=1, _job_id="bulk-0")
    console = ConsoleService(task_queue, settings, {})
    done = await asyncio.wait_for(console.bulk("retry", "refuses", "key:tests"), 30)
    assert done == 2
    assert [letter.task_id for letter in await task_queue.dead_letters(limit=10)] == [ids[0]]
