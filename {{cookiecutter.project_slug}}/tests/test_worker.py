"""Real arq workers, in-process, against a real Redis: results, progress, retries, timeouts,
de-duplication, abort, and the JSON serializer."""

import asyncio
import itertools
import pickle
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from arq.constants import (
    abort_jobs_ss,
    job_key_prefix,
    result_key_prefix,
)

from {{ cookiecutter.__package_name }}.infrastructure import queue as queue_module
from {{ cookiecutter.__package_name }}.infrastructure import tasks as tasks_module
from {{ cookiecutter.__package_name }}.infrastructure.queue import (
    NonRetryableError,
    TaskQueue,
    enqueue_task,
    get_task_pool,
)
from {{ cookiecutter.__package_name }}.infrastructure.task_keys import leases_key
from {{ cookiecutter.__package_name }}.infrastructure.task_tries import backoff_s
from {{ cookiecutter.__package_name }}.infrastructure.tasks import as_worker_function
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import Worker
from {{ cookiecutter.__package_name }}.infrastructure.worker_scripts import CLAIM_SCRIPT
from {{ cookiecutter.__package_name }}.infrastructure.worker_tries import claim_keys
from {{ cookiecutter.__package_name }}.settings import Settings, get_settings
from {{ cookiecutter.__package_name }}.tasks.registry import TaskSpec

calls: list[float] = []


async def flaky(ctx: dict[str, Any], fail_times: int) -> str:
    calls.append(time.monotonic())
    if ctx["job_try"] <= fail_times:
        raise ConnectionError(f"upstream down (try {ctx['job_try']})")
    return f"ok after {ctx['job_try']} tries"


async def refuses(ctx: dict[str, Any]) -> None:
    raise NonRetryableError("the input can never work")


async def returns_a_set(ctx: dict[str, Any]) -> object:
    return {1, 2, 3}


async def sleeps(ctx: dict[str, Any], seconds: float) -> str:
    await asyncio.sleep(seconds)
    return "woke up"


def functions(settings: Settings, *specs: TaskSpec) -> dict[str, Any]:
    return {"functions": [as_worker_function(spec, settings) for spec in specs]}


@pytest.fixture(autouse=True)
def forget_calls() -> None:
    calls.clear()


async def test_example_task_runs_to_completion_with_progress(
    client: httpx.AsyncClient, make_worker: Callable[..., Worker]
) -> None:
    """It runs a task submitted over HTTP and reports its result, progress, tries and times."""
    args = {"message": "hello", "steps": 4, "delay_s": 0.01}
    submitted = await client.post("/api/v1/tasks", json={"name": "example_task", "args": args})
    await make_worker().main()
    state = (await client.get(submitted.headers["Location"])).json()
    assert state["status"] == "complete"
    task_id = submitted.json()["task_id"]
    assert state["result"] == {"message": "hello", "steps": 4, "task_id": task_id}
    assert (state["progress"], state["tries"], state["error"]) == (100, 1, None)
    # Compared as times, not strings: a whole second is written without a fraction.
    keys = ("enqueued_at", "started_at", "finished_at")
    times = [datetime.fromisoformat(state[key]) for key in keys]
    assert times == sorted(times)


async def test_ordinary_exceptions_are_retried_with_backoff(
    task_queue: TaskQueue, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    """It retries a failing task with growing delays and succeeds on the third try."""
    task_id = await task_queue.enqueue("flaky", fail_times=2)
    assert task_id
    await make_worker(**functions(settings, TaskSpec(flaky))).main()
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.result, state.tries) == ("complete", "ok after 3 tries", 3)
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    base = settings.worker_retry_delay_s
    assert gaps[0] >= base / 2
    assert gaps[1] >= base  # the second wait is at least half of twice the base


async def test_a_task_that_keeps_failing_fails_after_max_tries(
    task_queue: TaskQueue, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    """It gives up after WORKER_MAX_TRIES and keeps the last error."""
    task_id = await task_queue.enqueue("flaky", fail_times=99)
    assert task_id
    await make_worker(**functions(settings, TaskSpec(flaky))).main()
    state = await task_queue.state(task_id)
    assert state is not None
    assert state.status == "failed"
    assert state.tries == settings.worker_max_tries == len(calls)
    assert state.error == f"ConnectionError: upstream down (try {settings.worker_max_tries})"


async def test_non_retryable_errors_fail_at_once(
    task_queue: TaskQueue, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    """It does not retry a task that raised NonRetryableError."""
    task_id = await task_queue.enqueue("refuses")
    assert task_id
    await make_worker(**functions(settings, TaskSpec(refuses))).main()
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.tries) == ("failed", 1)
    assert state.error == "NonRetryableError: the input can never work"


async def test_a_result_that_is_not_json_fails_clearly(
    task_queue: TaskQueue, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    """It fails a task whose result is not JSON, saying so, without retrying."""
    task_id = await task_queue.enqueue("returns_a_set")
    assert task_id
    await make_worker(**functions(settings, TaskSpec(returns_a_set))).main()
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.tries) == ("failed", 1)
    assert state.error is not None
    assert "returns_a_set returned a bad result: set is not a JSON value" in state.error


async def test_arguments_that_are_not_json_are_refused(task_queue: TaskQueue) -> None:
    """It refuses to enqueue arguments the JSON serializer cannot carry, naming the type."""
    with pytest.raises(TypeError, match="bytes is not a JSON value"):
        await task_queue.enqueue("example_task", message=b"raw bytes")
    assert int(await task_queue.pool.zcard(task_queue.settings.task_queue)) == 0


async def test_a_task_over_its_timeout_fails_like_any_failure(
    task_queue: TaskQueue, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    """It cancels a try that outlives the task's timeout, retries it like any failure, and
    fails it after its last try with an error that names the limit and its setting."""
    task_id = await task_queue.enqueue("sleeps", seconds=5)
    assert task_id
    spec = TaskSpec(sleeps, timeout_s=0.2, max_tries=2)
    await make_worker(**functions(settings, spec)).main()
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.tries) == ("failed", 2)
    assert state.error is not None
    assert "sleeps timed out after 0.2 s" in state.error
    assert "WORKER_JOB_TIMEOUT_S" in state.error


async def test_task_id_deduplicates_until_the_result_expires(task_queue: TaskQueue) -> None:
    """It enqueues a given `_job_id` once; the second enqueue returns None."""
    assert await task_queue.enqueue("example_task", message="a", _job_id="report-7") == "report-7"
    assert await task_queue.enqueue("example_task", message="b", _job_id="report-7") is None


async def test_deferred_task_waits_for_its_time(
    task_queue: TaskQueue, make_worker: Callable[..., Worker]
) -> None:
    """It starts a deferred task no earlier than asked."""
    task_id = await task_queue.enqueue(
        "example_task", message="x", steps=1, delay_s=0, _defer_by=0.5
    )
    assert task_id
    await make_worker().main()
    state = await task_queue.state(task_id)
    assert state is not None
    assert state.status == "complete"
    assert state.started_at is not None
    assert state.enqueued_at is not None
    assert (state.started_at - state.enqueued_at).total_seconds() >= 0.5


async def test_aborting_a_running_task_cancels_it(
    client: httpx.AsyncClient, task_queue: TaskQueue, make_worker: Callable[..., Worker]
) -> None:
    """It cancels a task in progress: DELETE answers "aborting", the status becomes aborted."""
    args = {"message": "long", "steps": 100, "delay_s": 0.05}
    submitted = await client.post("/api/v1/tasks", json={"name": "example_task", "args": args})
    url = submitted.headers["Location"]
    worker = make_worker(burst=False)
    running = asyncio.create_task(worker.main())
    try:
        for _ in range(200):
            running_state = (await client.get(url)).json()
            if running_state["status"] == "in_progress":
                break
            await asyncio.sleep(0.02)
        # The current try's start, while it runs.
        assert running_state["started_at"] is not None
        cancelled = await client.delete(url)
        assert cancelled.json()["status"] == "aborting"
        for _ in range(200):
            state = (await client.get(url)).json()
            if state["status"] == "aborted":
                break
            await asyncio.sleep(0.02)
        assert state["status"] == "aborted"
        assert state["result"] is None
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)


async def test_a_cancelled_queued_task_never_runs(
    client: httpx.AsyncClient, make_worker: Callable[..., Worker]
) -> None:
    """It records a task cancelled while queued as aborted, and no worker runs it later."""
    body = {"name": "example_task", "args": {"message": "never", "steps": 1, "delay_s": 0}}
    submitted = await client.post("/api/v1/tasks", json=body)
    await client.delete(submitted.headers["Location"])
    await make_worker().main()
    state = (await client.get(submitted.headers["Location"])).json()
    assert (state["status"], state["progress"], state["result"]) == ("aborted", None, None)
    assert (state["tries"], state["started_at"]) == (0, None)  # it never ran


class Planted:
    """Pickled, it would create a file when loaded."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


async def test_a_pickled_payload_planted_in_redis_is_never_executed(
    task_queue: TaskQueue, make_worker: Callable[..., Worker], tmp_path: Path
) -> None:
    """It refuses a job whose payload is pickle: the JSON deserializer cannot run code."""
    marker = tmp_path / "pwned"
    payload = pickle.dumps({"t": 1, "f": "example_task", "a": [Planted(marker)], "k": {}, "et": 1})
    await task_queue.pool.set("arq:job:planted", payload)
    await task_queue.pool.zadd(task_queue.settings.task_queue, {"planted": 1})
    waiting = await task_queue.state("planted")
    assert waiting is not None
    assert (waiting.status, waiting.name) == ("queued", "<unreadable>")
    await make_worker().main()
    assert not marker.exists()
    state = await task_queue.state("planted")
    assert state is not None
    assert (state.status, state.tries) == ("failed", 1)
    assert state.error == "DeserializationError: unable to deserialize job"
    [letter] = await task_queue.dead_letters(limit=10)
    assert (letter.task_id, letter.error) == ("planted", state.error)


def test_backoff_grows_and_is_capped() -> None:
    """It doubles the delay bound with each try, jittered within its upper half, up to the cap."""
    for job_try, bound in [(1, 1.0), (2, 2.0), (3, 4.0), (10, 30.0)]:
        delays = [backoff_s(job_try, base_s=1.0, cap_s=30.0) for _ in range(50)]
        assert all(bound / 2 <= delay <= bound for delay in delays)


async def test_enqueue_task_helper_uses_the_process_settings(
    redis_url: str, monkeypatch: pytest.MonkeyPatch, task_queue: TaskQueue
) -> None:
    """It enqueues through the process-wide client built from the environment's settings."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    try:
        task_id = await enqueue_task("example_task", message="from a script")
        assert task_id
        state = await task_queue.state(task_id)
        assert state is not None
        assert state.status == "queued"
        await (await get_task_pool()).close()
    finally:
        monkeypatch.setattr(queue_module, "_process_queue", None)
        get_settings.cache_clear()


async def retries_later(ctx: dict[str, Any]) -> str:
    calls.append(time.monotonic())
    if ctx["job_try"] == 1:
        raise tasks_module.Retry(defer=0.3)
    return "second try"


async def test_seed_style_code_works_as_arq_users_write_it(
    redis_url: str,
    monkeypatch: pytest.MonkeyPatch,
    settings: Settings,
    task_queue: TaskQueue,
    make_worker: Callable[..., Worker],
) -> None:
    """`enqueue_task`, `get_task_pool` and `Retry` from infrastructure.tasks, and a job handle
    with arq's `status()`, `info()` and `result()`; an unknown name is refused at the call,
    naming the tasks there are, and enqueues nothing."""
    monkeypatch.setenv("REDIS_URL", redis_url)
    get_settings.cache_clear()
    try:
        with pytest.raises(tasks_module.UnknownTaskError, match="example_task"):
            await tasks_module.enqueue_task("send_email", to="a@example.com")
        assert int(await task_queue.pool.zcard(settings.task_queue)) == 0
        task_id = await tasks_module.enqueue_task("example_task", "hi", 1, 0)
        assert task_id
        job = (await tasks_module.get_task_pool()).job(task_id)
        assert await job.status() == "queued"
        await make_worker().main()
        assert await job.result(timeout_s=30) == {"message": "hi", "steps": 1, "task_id": task_id}
        info = await job.info()
        assert info is not None
        assert (info.status, info.tries) == ("complete", 1)
        assert await (await tasks_module.get_task_pool()).job("no-such-id").status() == "not_found"
        await (await tasks_module.get_task_pool()).close()
    finally:
        monkeypatch.setattr(queue_module, "_process_queue", None)
        get_settings.cache_clear()


async def test_retry_with_a_chosen_delay_runs_the_task_again_after_it(
    task_queue: TaskQueue, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    """`raise Retry(defer=0.3)` (the task layer's, arq's class) runs the next try that much
    later, counted as a try."""
    task_id = await task_queue.enqueue("retries_later")
    assert task_id
    await make_worker(**functions(settings, TaskSpec(retries_later))).main()
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.tries, state.result) == ("complete", 2, "second try")
    assert calls[1] - calls[0] >= 0.3


async def test_an_abort_sent_again_after_a_lost_reply_gives_the_same_answer(
    task_queue: TaskQueue,
) -> None:
    """Aborting a waiting task is one script: off its queue and its result written together;
    the same script sent again (its first reply lost) answers "aborted" again and changes
    nothing more."""
    task_id = await task_queue.enqueue("example_task", message="never")
    assert task_id
    pool, queues = task_queue.pool, task_queue.queues
    job_raw = cast(bytes, await pool.get(job_key_prefix + task_id))
    assert await task_queue.abort(task_id) == "aborted"
    result = cast(bytes, await pool.get(result_key_prefix + task_id))
    again = await task_queue._abort_script(  # what the first call sent
        keys=task_queue.abort_keys(task_id),
        args=[task_id, job_raw, result, 60_000, *(f"unused-{queue}" for queue in queues)],
        client=pool,
    )
    assert again == b"aborted"
    assert await pool.get(result_key_prefix + task_id) == result
    assert not await pool.zscore(abort_jobs_ss, task_id)  # no stop request for a worker
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.tries, state.started_at) == ("aborted", 0, None)
    assert all([await pool.zscore(queue, task_id) is None for queue in queues])


async def test_an_enqueue_sent_again_after_a_lost_reply_gives_the_same_answer(
    task_queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The enqueue script sent a second time with the same keys and arguments (its first
    reply lost) answers that it enqueued the task, and counts nothing twice."""
    calls: list[dict[str, Any]] = []
    script = task_queue._enqueue_script

    async def recorded(**call: Any) -> Any:
        calls.append(call)
        return await script(**call)

    monkeypatch.setattr(task_queue, "_enqueue_script", recorded)
    task_id = await task_queue.enqueue("example_task", message="once")
    assert task_id
    assert await script(**calls[0]) == 1
    assert await task_queue.pool.zcard(task_queue.queues[0]) == 1
    assert (await task_queue.metrics()).submissions == {"example_task": 1}
    assert await task_queue.enqueue("example_task", _job_id=task_id, message="other") is None


async def test_a_claim_sent_again_after_a_lost_reply_gives_the_same_tasks(
    settings: Settings, task_queue: TaskQueue, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim script sent a second time (its first reply lost) answers the tasks, tries and
    tokens of the first, instead of claiming the next ones."""
    pool, queue = task_queue.pool, task_queue.queues[0]
    ids = [str(await task_queue.enqueue("example_task", message=str(n))) for n in range(3)]
    claim = pool.register_script(CLAIM_SCRIPT)
    keys = claim_keys(queue, "worker-1:0")
    args: list[str | int] = [2, 60_000, 60_000, "worker-1:0", 100]
    first = await claim(keys=keys, args=args, client=pool)
    again = await claim(keys=keys, args=args, client=pool)
    assert again == first
    claimed = {raw.decode() for raw in first[::4]}
    assert len(claimed) == 2
    assert claimed < set(ids)
    assert await pool.zcard(leases_key(queue)) == 2
    assert await pool.zrange(queue, 0, -1) == [(set(ids) - claimed).pop().encode()]
