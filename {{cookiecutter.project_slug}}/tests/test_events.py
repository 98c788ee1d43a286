"""Following a task live over a real HTTP server: Server-Sent Events and a WebSocket relay the
events a real worker publishes, end after the terminal one, and work across API processes."""

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from arq.worker import Worker
from redis.asyncio import Redis
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import free_port
from {{ cookiecutter.__package_name }}.infrastructure.events import (
    TaskEventHub,
    events_channel,
)
from {{ cookiecutter.__package_name }}.infrastructure.queue import open_queue_pool
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import TEST_API_KEY, TEST_KEY, bearer

DEADLINE_S = 30.0  # an upper bound for slow, loaded machines, not a timing claim
Event = dict[str, Any]
Followed = tuple[list[Event], int | None]  # the events, and the close code


@asynccontextmanager
async def serve_http(settings: Settings) -> AsyncIterator[str]:
    """The app under uvicorn on a free port of 127.0.0.1, in this process; yields host:port."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(create_app(settings), log_level="warning", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        async with asyncio.timeout(DEADLINE_S):
            while not server.started:  # noqa: ASYNC110 - uvicorn has no "started" event
                await asyncio.sleep(0.01)
        yield f"127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        await serving
        sock.close()


async def sse_events(address: str, task_id: str) -> AsyncIterator[Event]:
    """The events of `GET .../events`, as a browser's EventSource would hand them over."""
    url = f"http://{address}/api/v1/tasks/{task_id}/events"
    client = httpx.AsyncClient(timeout=DEADLINE_S, headers=bearer(TEST_KEY))
    async with client, client.stream("GET", url) as reply:
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/event-stream")
        async for line in reply.aiter_lines():
            if line.startswith("data: "):
                yield json.loads(line.removeprefix("data: "))


async def ws_events(address: str, task_id: str, first: asyncio.Event | None = None) -> Followed:
    """Every message of `WS .../ws` until the server closes, and the close code; `first` is set
    on the first message, the state the follower starts from."""
    events: list[Event] = []
    url = f"ws://{address}/api/v1/tasks/{task_id}/ws"
    async with connect(url, additional_headers=bearer(TEST_KEY)) as websocket:
        try:
            while True:
                events.append(json.loads(await websocket.recv()))
                if first is not None:
                    first.set()
        except ConnectionClosed:
            return events, websocket.close_code


async def follow_over_ws(address: str, task_id: str) -> asyncio.Task[Followed]:
    """A WebSocket follower that has its starting state: what happens next reaches it as events."""
    first = asyncio.Event()
    following = asyncio.create_task(ws_events(address, task_id, first))
    await first.wait()
    return following


async def submit(address: str, steps: int = 3, delay_s: float = 0.02) -> str:
    body = {"name": "example_task", "args": {"message": "live", "steps": steps, "delay_s": delay_s}}
    async with httpx.AsyncClient(headers=bearer(TEST_KEY)) as client:
        reply = await client.post(f"http://{address}/api/v1/tasks", json=body)
    assert reply.status_code == 202, reply.text
    return str(reply.json()["task_id"])


def assert_full_run(events: list[Event], task_id: str, steps: int = 3) -> None:
    """queued, started, one progress event per step, then complete with the result."""
    assert {event["task_id"] for event in events} == {task_id}
    assert [event["event"] for event in events] == ["state", "started"] + ["progress"] * steps + [
        "complete"
    ]
    assert events[0]["status"] == "queued"
    assert [event["progress"] for event in events[2:]] == [
        step * 100 // steps for step in range(1, steps + 1)
    ] + [100]
    assert events[-1]["status"] == "complete"
    assert events[-1]["data"]["result"]["message"] == "live"
    assert all(isinstance(event["ts"], float) for event in events)


async def test_sse_relays_a_task_from_queued_to_complete(
    settings: Settings, redis: Redis, make_worker: Callable[..., Worker]
) -> None:
    async with serve_http(settings) as address, asyncio.timeout(DEADLINE_S):
        task_id = await submit(address)
        events: list[Event] = []
        async for event in sse_events(address, task_id):
            events.append(event)
            if len(events) == 1:  # following from the queued state: now let a worker run it
                worker = asyncio.create_task(make_worker().main())
        await worker
    assert_full_run(events, task_id)


async def test_websocket_relays_the_same_events_and_closes_normally(
    settings: Settings, redis: Redis, make_worker: Callable[..., Worker]
) -> None:
    async with serve_http(settings) as address, asyncio.timeout(DEADLINE_S):
        task_id = await submit(address)
        following = await follow_over_ws(address, task_id)
        await make_worker().main()
        events, close_code = await following
    assert close_code == 1000
    assert_full_run(events, task_id)


async def test_a_late_follower_gets_the_terminal_state_at_once(
    settings: Settings, redis: Redis, make_worker: Callable[..., Worker]
) -> None:
    async with serve_http(settings) as address, asyncio.timeout(5):
        task_id = await submit(address, steps=1)
        await make_worker().main()
        sse = [event async for event in sse_events(address, task_id)]
        ws, close_code = await ws_events(address, task_id)
    for events in (sse, ws):
        assert len(events) == 1
        assert events[0]["event"] == events[0]["status"] == "complete"
        assert events[0]["progress"] == 100
        assert events[0]["data"]["result"]["steps"] == 1
    assert close_code == 1000


async def test_only_the_followed_task_s_events_arrive(
    settings: Settings, redis: Redis, make_worker: Callable[..., Worker]
) -> None:
    async with serve_http(settings) as address, asyncio.timeout(DEADLINE_S):
        others = [await submit(address) for _ in range(2)]
        task_id = await submit(address)
        following = await follow_over_ws(address, task_id)
        await make_worker().main()
        events, _ = await following
    assert task_id not in others
    assert_full_run(events, task_id)


async def test_an_abort_ends_the_stream(settings: Settings, redis: Redis) -> None:
    async with serve_http(settings) as address, asyncio.timeout(DEADLINE_S):
        task_id = await submit(address)
        following = await follow_over_ws(address, task_id)
        async with httpx.AsyncClient(headers=bearer(TEST_KEY)) as client:
            reply = await client.delete(f"http://{address}/api/v1/tasks/{task_id}")
        assert reply.json()["status"] == "aborted"
        events, close_code = await following
    assert [event["event"] for event in events] == ["state", "aborted"]
    assert events[-1]["data"]["error"]
    assert close_code == 1000


async def test_a_lost_terminal_event_is_made_up_by_the_recheck(
    settings: Settings, redis: Redis, make_worker: Callable[..., Worker]
) -> None:
    """A worker that never publishes the end (as after a crash) still ends the stream."""
    settings = settings.model_copy(update={"task_events_recheck_s": 0.2})
    async with serve_http(settings) as address, asyncio.timeout(DEADLINE_S):
        task_id = await submit(address, steps=1)
        following = await follow_over_ws(address, task_id)
        await make_worker(after_job_end=None).main()
        events, close_code = await following
    assert events[-1]["event"] == "complete"
    assert events[-1]["data"]["result"]["message"] == "live"
    assert close_code == 1000


async def test_unknown_tasks_get_404_and_close_code_4404(settings: Settings, redis: Redis) -> None:
    async with serve_http(settings) as address, asyncio.timeout(DEADLINE_S):
        async with httpx.AsyncClient(headers=bearer(TEST_KEY)) as client:
            reply = await client.get(f"http://{address}/api/v1/tasks/nope/events")
        assert reply.status_code == 404
        assert "nope" in reply.json()["detail"]
        for task_id in ("nope", "%20odd%20id%21"):
            events, close_code = await ws_events(address, task_id)
            assert (events, close_code) == ([], 4404)


def start_api(
    redis_url: str, log: Path, *, log_level: str = "warning"
) -> tuple[str, subprocess.Popen[bytes]]:
    """An API process under uvicorn, as deployed, on a free port of 127.0.0.1, writing its
    output to `log`; returns its host:port (not yet live) and the process."""
    port = free_port()
    env = {**os.environ, "REDIS_URL": redis_url, "API_KEYS": TEST_API_KEY.entry}
    command = [
        sys.executable, "-m", "uvicorn", "--factory",
        "{{ cookiecutter.__package_name }}.main:create_app", "--host", "127.0.0.1",
        "--port", str(port), "--log-level", log_level, "--no-access-log",
    ]  # fmt: skip
    with log.open("ab") as out:
        process = subprocess.Popen(command, env=env, cwd=log.parent, stdout=out, stderr=out)
    return f"127.0.0.1:{port}", process


@pytest.fixture
def api_processes(redis_url: str, tmp_path: Path) -> Iterator[list[str]]:
    """Two API processes under uvicorn, as deployed: separate processes sharing only Redis."""
    started = [start_api(redis_url, tmp_path / f"api-{index}.log") for index in range(2)]
    addresses = [address for address, _ in started]
    processes = [process for _, process in started]
    try:
        for address in addresses:
            wait_until_live(address)
        yield addresses
    finally:
        for process in processes:
            process.terminate()
            process.wait(timeout=DEADLINE_S)


def wait_until_live(address: str) -> None:
    for _ in range(int(DEADLINE_S / 0.05)):
        try:
            if httpx.get(f"http://{address}/health/live").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise AssertionError(f"no API on {address} after {DEADLINE_S} s")


async def test_two_api_processes_relay_one_worker_s_events(
    api_processes: list[str], redis: Redis, make_worker: Callable[..., Worker]
) -> None:
    """Submitted on one process; followed over SSE on one and over WebSocket on the other."""
    first, second = api_processes
    async with asyncio.timeout(DEADLINE_S):
        task_id = await submit(first)
        over_ws = await follow_over_ws(second, task_id)
        sse: list[Event] = []
        async for event in sse_events(first, task_id):
            sse.append(event)
            if len(sse) == 1:  # both follow from the queued state: now let a worker run it
                worker = asyncio.create_task(make_worker().main())
        await worker
        ws, close_code = await over_ws
    assert_full_run(sse, task_id)
    assert_full_run(ws, task_id)
    assert close_code == 1000


async def test_followers_arriving_together_all_get_events_and_the_hub_closes_cleanly(
    settings: Settings, redis: Redis
) -> None:
    """Many followers of a few tasks subscribe at once on a new hub, some leave, more come:
    every follower present gets each event once, and closing the hub raises nothing. (The
    first follower's SUBSCRIBE is still on its way when the others arrive.)"""
    pool = open_queue_pool(settings)
    hub = TaskEventHub(pool)
    received: list[bytes] = []

    async def follow(task_id: str, subscribed: asyncio.Event, events: int) -> None:
        async with hub.subscribe(task_id) as inbox:
            # Let go only once Redis confirmed the SUBSCRIBE: an event published now reaches it.
            [(_, listeners)] = await redis.pubsub_numsub(events_channel(task_id))
            assert listeners == 1
            subscribed.set()
            for _ in range(events):
                received.append(await inbox.get())

    async def publish(task_id: str, payload: bytes) -> None:
        await pool.publish(events_channel(task_id), payload)

    try:
        async with asyncio.timeout(DEADLINE_S):
            for round_ in range(3):
                ready = [asyncio.Event() for _ in range(60)]
                followers = [
                    asyncio.create_task(follow(f"task-{n % 3}", ready[n], 1)) for n in range(60)
                ]
                for event in ready:
                    await event.wait()
                for task_number in range(3):
                    await publish(f"task-{task_number}", f"{round_}".encode())
                await asyncio.gather(*followers)
        assert received == [str(round_).encode() for round_ in range(3) for _ in range(60)]
    finally:
        await hub.close()
        await pool.aclose()
