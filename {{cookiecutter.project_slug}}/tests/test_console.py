"""The operator console: who gets in, what its pages list, what its actions do, how much it
keeps, and its live stream. The browser test of the template drives the same pages in
Chromium."""

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from redis.asyncio import Redis

from {{ cookiecutter.__package_name }}.access import create_key
from {{ cookiecutter.__package_name }}.api import console, console_pages
from {{ cookiecutter.__package_name }}.api.console_session import (
    SECURITY_HEADERS,
    SESSION_COOKIE,
    SIGN_IN_COOKIE,
)
from {{ cookiecutter.__package_name }}.infrastructure.queue import (
    NonRetryableError,
    TaskQueue,
)
from {{ cookiecutter.__package_name }}.infrastructure.tasks import (
    as_worker_function,
    worker_settings,
)
from {{ cookiecutter.__package_name }}.infrastructure.worker_loop import Worker
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings
from {{ cookiecutter.__package_name }}.tasks.registry import TaskSpec

from .support import TEST_KEY, serve
from .test_events import serve_http

READER_KEY, READER = create_key("reader", ["tasks:read", "tasks:submit"])
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
Cookies = dict[str, str]  # a Cookie header


def cookie(name: str, value: str) -> Cookies:
    return {"Cookie": f"{name}={value}"}


async def shout(ctx: dict[str, Any], word: str) -> str:
    return word.upper()


async def breaks(ctx: dict[str, Any], part: str) -> None:
    raise NonRetryableError(f"{part} is broken")


async def dawdles(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(30)


@pytest.fixture
def settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"api_keys": [*settings.api_keys, READER]})


@pytest.fixture
def run_worker(settings: Settings, make_worker: Callable[..., Worker]) -> Callable[[], Any]:
    specs = (TaskSpec(shout), TaskSpec(breaks), TaskSpec(dawdles, timeout_s=60))
    functions = [as_worker_function(spec, settings) for spec in specs]
    return lambda: make_worker(functions=functions).main()


@pytest.fixture
async def anonymous(settings: Settings, redis: Redis) -> AsyncIterator[httpx.AsyncClient]:
    """A browser: no Authorization header, cookies sent by hand (they are Secure outside
    development, and the test server speaks plain HTTP)."""
    async with serve(create_app(settings), key=None) as client:
        yield client


async def sign_in(client: httpx.AsyncClient, key: str) -> httpx.Response:
    form = await client.get("/console/sign-in")
    token = form.cookies[SIGN_IN_COOKIE]
    csrf = CSRF.search(form.text)
    assert csrf is not None
    return await client.post(
        "/console/sign-in",
        data={"key": key, "csrf": csrf.group(1), "next": "/console/tasks?status=failed"},
        headers=cookie(SIGN_IN_COOKIE, token),
    )


@pytest.fixture
async def operator(anonymous: httpx.AsyncClient) -> Cookies:
    answer = await sign_in(anonymous, TEST_KEY)
    return cookie(SESSION_COOKIE, answer.cookies[SESSION_COOKIE])


async def csrf_of(client: httpx.AsyncClient, cookies: Cookies, path: str = "/console") -> str:
    found = CSRF.search((await client.get(path, headers=cookies)).text)
    assert found is not None
    return found.group(1)


async def test_pages_and_actions_need_an_operator_session(anonymous: httpx.AsyncClient) -> None:
    for path in ("/console", "/console/tasks?status=failed", "/console/dead-letters"):
        answer = await anonymous.get(path)
        assert answer.status_code == 303
        assert answer.headers["location"].startswith("/console/sign-in?next=%2Fconsole")
    assert (await anonymous.get("/console/events")).status_code == 401
    forged = cookie(SESSION_COOKIE, "made-up")
    assert (await anonymous.get("/console", headers=forged)).status_code == 303
    posted = await anonymous.post("/console/tasks/x.y/abort", data={"csrf": "x"}, headers=forged)
    assert posted.status_code == 303
    assert posted.headers["location"].startswith("/console/sign-in")


async def test_sign_in_takes_operators_only_and_sets_a_strict_cookie(
    anonymous: httpx.AsyncClient,
) -> None:
    unknown = await sign_in(anonymous, "key_made_up")
    assert "This key or token is not known." in unknown.text
    reader = await sign_in(anonymous, READER_KEY)
    assert "This key or token does not have the operator scope." in reader.text
    assert SESSION_COOKIE not in reader.cookies
    assert "<table" not in reader.text  # the sign-in page, never data

    signed_in = await sign_in(anonymous, TEST_KEY)
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "/console/tasks?status=failed"
    set_cookie = next(
        header
        for header in signed_in.headers.get_list("set-cookie")
        if header.startswith(SESSION_COOKIE + "=")
    )
    flags = {flag.strip().lower() for flag in set_cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "secure", "path=/console"} <= flags
    session = cookie(SESSION_COOKIE, signed_in.cookies[SESSION_COOKIE])
    page = await anonymous.get("/console", headers=session)
    assert page.status_code == 200
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


async def test_sign_in_refuses_a_form_without_its_token_and_outside_targets(
    anonymous: httpx.AsyncClient,
) -> None:
    posted = await anonymous.post("/console/sign-in", data={"key": TEST_KEY, "csrf": "guess"})
    assert posted.status_code == 403
    # No cookie and no field: two empty tokens are no match (login CSRF).
    for data in ({"key": TEST_KEY}, {"key": TEST_KEY, "csrf": ""}):
        bare = await anonymous.post("/console/sign-in", data=data)
        assert bare.status_code == 403
        assert SESSION_COOKIE not in bare.cookies
    form = await anonymous.get("/console/sign-in")
    token = form.cookies[SIGN_IN_COOKIE]
    for target in ("https://elsewhere.example/console", "//elsewhere.example", "/api/v1/tasks"):
        answer = await anonymous.post(
            "/console/sign-in",
            data={"key": TEST_KEY, "csrf": token, "next": target},
            headers=cookie(SIGN_IN_COOKIE, token),
        )
        assert answer.headers["location"] == "/console"


async def test_forms_need_the_session_s_csrf_token_and_sign_out_ends_it(
    anonymous: httpx.AsyncClient, operator: Cookies, task_queue: TaskQueue
) -> None:
    task_id = await task_queue.enqueue("shout", word="hi")
    for data in ({}, {"csrf": "forged"}):
        refused = await anonymous.post(
            f"/console/tasks/{task_id}/abort", data=data, headers=operator
        )
        assert refused.status_code == 403
    state = await task_queue.state(task_id or "")
    assert state is not None
    assert state.status == "queued"  # nothing changed
    csrf = await csrf_of(anonymous, operator)
    out = await anonymous.post("/console/sign-out", data={"csrf": csrf}, headers=operator)
    assert out.status_code == 303
    assert (await anonymous.get("/console", headers=operator)).status_code == 303


async def test_every_console_form_refuses_a_post_without_its_token(
    anonymous: httpx.AsyncClient, operator: Cookies
) -> None:
    """Each POST route of the console's router: with the operator's session but no token, or
    an empty one, it answers 403; without a session nothing passes either."""
    paths = [
        route.path.replace("{task_id}", "some.task").replace("{name}", "shout")
        for route in console.router.routes
        if isinstance(route, APIRoute) and "POST" in (route.methods or set())
    ]
    assert len(paths) == 5
    for path in (path.replace("{action}", "retry") for path in paths):
        for data in ({}, {"csrf": ""}):
            signed_in = await anonymous.post(path, data=data, headers=operator)
            assert signed_in.status_code == 403, (path, data)
            bare = await anonymous.post(path, data=data)
            assert bare.status_code in (303, 403), (path, data)
            assert SESSION_COOKIE not in bare.cookies


async def test_a_session_ends_when_its_key_is_revoked(
    settings: Settings, redis: Redis, operator: Cookies
) -> None:
    revoked = settings.model_copy(update={"api_keys": [READER]})
    async with serve(create_app(revoked), key=None) as client:
        assert (await client.get("/console", headers=operator)).status_code == 303


async def test_with_access_control_off_in_development_any_key_signs_in(
    settings: Settings, redis: Redis
) -> None:
    open_to_all = settings.model_copy(update={"environment": "development", "auth_disabled": True})
    async with serve(create_app(open_to_all), key=None) as client:
        signed_in = await sign_in(client, "anything")
        assert signed_in.status_code == 303
        session = cookie(SESSION_COOKIE, signed_in.cookies[SESSION_COOKIE])
        assert (await client.get("/console", headers=session)).status_code == 200


async def test_lists_show_each_state_page_by_page_and_outlive_arq_s_results(
    anonymous: httpx.AsyncClient,
    operator: Cookies,
    task_queue: TaskQueue,
    run_worker: Callable[[], Any],
    redis: Redis,
) -> None:
    ids = [await task_queue.enqueue("shout", word=f"w{i}") for i in range(120)]
    later = await task_queue.enqueue("shout", word="later", _defer_by=600)
    queued = await anonymous.get("/console/tasks?status=queued", headers=operator)
    assert "Page 1 of 3 (120 in all)" in queued.text
    assert f'data-task-id="{ids[-1]}"' in queued.text  # the newest first
    last = await anonymous.get("/console/tasks?status=queued&page=3", headers=operator)
    assert f'data-task-id="{ids[0]}"' in last.text
    assert last.text.count("data-task-id=") == 20
    deferred = await anonymous.get("/console/tasks?status=deferred", headers=operator)
    assert f'data-task-id="{later}"' in deferred.text
    assert await task_queue.abort(later or "") == "aborted"  # a burst worker would wait for it

    await run_worker()
    # arq forgets results after WORKER_KEEP_RESULT_S: the console's history does not.
    await redis.delete(*[f"arq:result:{task_id}" for task_id in ids])
    done = await anonymous.get("/console/tasks?status=complete&name=shout", headers=operator)
    assert "Page 1 of 3 (120 in all)" in done.text
    page = await anonymous.get(f"/console/tasks/{ids[7]}", headers=operator)
    assert page.status_code == 200
    assert "{&#34;word&#34;:&#34;w7&#34;}" in page.text  # the arguments, escaped
    assert "&#34;W7&#34;" in page.text  # the result
    assert page.text.count("<li>") == 2  # started, complete
    assert "started" in page.text
    other_queue = f"/console/tasks?status=complete&queue={task_queue.settings.slow_task_queue}"
    assert "No complete tasks" in (await anonymous.get(other_queue, headers=operator)).text


# A moment in a list: month, day and time; the full moment on hover.
MOMENT = r'<time datetime="[^"]+" title="\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC">[\d: -]{14}</time>'


def rows_of(page: str) -> dict[str, list[str]]:
    """The cells of each task row of a list page, by task id, in the page's order."""
    rows = re.findall(r'<tr data-task-id="([^"]+)">(.*?)</tr>', page, re.DOTALL)
    return {
        task_id: re.findall(r"<td[^>]*>(.*?)</td>", cells, re.DOTALL) for task_id, cells in rows
    }


async def test_the_tasks_page_opens_on_recent_tasks_of_every_state(
    anonymous: httpx.AsyncClient,
    operator: Cookies,
    task_queue: TaskQueue,
    run_worker: Callable[[], Any],
) -> None:
    """Finished and waiting tasks in one list, the one that moved last first, each with its
    tries, start and duration; a task deferred to later waits in its own list. The overview
    counts them in words that agree and charts them on a time axis."""
    done = [str(await task_queue.enqueue("shout", word=f"w{i}")) for i in range(3)]
    failed = str(await task_queue.enqueue("breaks", part="axle"))
    await run_worker()
    waiting = str(await task_queue.enqueue("shout", word="next"))
    later = str(await task_queue.enqueue("shout", word="later", _defer_by=600))

    listed = await anonymous.get("/console/tasks", headers=operator)
    assert re.search(r'status=recent[^"]*" aria-current="page">recent<', listed.text)
    assert "Page 1 of 1 (5 in all)" in listed.text
    rows = rows_of(listed.text)
    assert next(iter(rows)) == waiting  # due after the others finished
    assert set(rows) == {waiting, failed, *done}
    assert later not in rows
    for task_id in [failed, *done]:
        _, _, _, status, tries, _, started, took, finished, _ = rows[task_id]
        assert ("failed" if task_id == failed else "complete") in status
        assert tries == "1"
        assert re.fullmatch(MOMENT, started), started
        assert re.fullmatch(MOMENT, finished), finished
        assert re.fullmatch(r"\d+ ms|\d+\.\d s", took), took
    assert rows[waiting][6:9] == ["-", "-", "-"]  # not started yet
    queued = rows_of((await anonymous.get("/console/tasks?status=queued", headers=operator)).text)
    enqueued_at, due_at = queued[waiting][6:8]
    assert re.fullmatch(MOMENT, enqueued_at), enqueued_at
    assert re.fullmatch(MOMENT, due_at), due_at

    overview = (await anonymous.get("/console", headers=operator)).text
    assert ">1 dead letter</a>" in overview
    per_minute = re.findall(r"<title>\d\d:\d\d UTC: (\d+) finished</title>", overview)
    assert len(per_minute) == 60
    assert sum(map(int, per_minute)) == 4
    assert len(re.findall(r'<text class="time"[^>]*>\d\d:\d[05]</text>', overview)) == 4
    peak = re.search(r'<text class="count"[^>]*>(\d+)</text>', overview)
    assert peak is not None
    assert peak.group(1) == str(max(map(int, per_minute)))


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.85, "850 ms"), (12.44, "12.4 s"), (185, "3 min 5 s"), (7_800, "2 h 10 min")],
)
def test_durations_read_as_people_say_them(seconds: float | None, text: str) -> None:
    assert console_pages.duration(seconds) == text


async def test_unknown_tasks_get_a_404_page_and_bad_filters_a_422(
    anonymous: httpx.AsyncClient, operator: Cookies
) -> None:
    missing = await anonymous.get("/console/tasks/nobody.nothing", headers=operator)
    assert missing.status_code == 404
    assert "Task not found" in missing.text
    assert (await anonymous.get("/console/tasks?status=lost", headers=operator)).status_code == 422
    assert (await anonymous.get("/console/tasks?page=0", headers=operator)).status_code == 422


async def test_operators_abort_tasks_and_retry_or_delete_dead_letters(
    anonymous: httpx.AsyncClient,
    operator: Cookies,
    task_queue: TaskQueue,
    run_worker: Callable[[], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    logger = "{{ cookiecutter.__package_name }}.services.console"
    caplog.set_level(logging.INFO, logger=logger)
    waiting = await task_queue.enqueue("shout", word="never")
    broken = [await task_queue.enqueue("breaks", part=f"p{i}") for i in range(3)]
    csrf = await csrf_of(anonymous, operator)
    aborted = await anonymous.post(
        f"/console/tasks/{waiting}/abort", data={"csrf": csrf}, headers=operator
    )
    assert aborted.headers["location"] == f"/console/tasks/{waiting}?notice=aborted"
    page = await anonymous.get(aborted.headers["location"], headers=operator)
    assert "The task was aborted." in page.text
    assert 'class="status aborted"' in page.text
    await run_worker()

    letters = await anonymous.get("/console/dead-letters", headers=operator)
    assert all(f'data-task-id="{task_id}"' in letters.text for task_id in broken)
    retried = await anonymous.post(
        f"/console/dead-letters/{broken[0]}/retry", data={"csrf": csrf}, headers=operator
    )
    assert retried.headers["location"] == f"/console/tasks/{broken[0]}?notice=retried"
    state = await task_queue.state(broken[0] or "")
    assert state is not None
    assert state.status == "queued"
    await anonymous.post(
        f"/console/dead-letters/{broken[1]}/delete", data={"csrf": csrf}, headers=operator
    )
    assert await task_queue.dead_letter_store.count() == 1

    await run_worker()  # broken[0] fails again
    confirm = await anonymous.get("/console/dead-letters-of/breaks/delete", headers=operator)
    assert "2 dead letters of <strong>breaks</strong> will be" in confirm.text
    assert await task_queue.dead_letter_store.count() == 2  # asking changed nothing
    await anonymous.post(
        "/console/dead-letters-of/breaks/delete", data={"csrf": csrf}, headers=operator
    )
    assert await task_queue.dead_letter_store.count() == 0
    logged = [record.getMessage() for record in caplog.records]
    assert f"console: key:tests aborted task {waiting} (aborted)" in logged
    assert f"console: key:tests retried dead letter {broken[0]}" in logged
    assert f"console: key:tests deleted dead letter {broken[1]}" in logged
    assert "console: key:tests deleted 2 dead letters of breaks" in logged


async def test_history_keeps_the_newest_within_its_bound(
    settings: Settings, task_queue: TaskQueue
) -> None:
    """CONSOLE_HISTORY_MAX bounds what the console keeps: records, indexes and timelines."""
    bounded = settings.model_copy(update={"console_history_max": 50})
    options = worker_settings(bounded, queue=bounded.task_queue, with_cron=False)
    functions = [as_worker_function(TaskSpec(shout), bounded)]
    worker = Worker(**{**options, "functions": functions, "burst": True, "handle_signals": False})
    for i in range(80):
        await task_queue.enqueue("shout", word=f"w{i}")
    try:
        await worker.main()
    finally:
        await worker.close()
    history = await task_queue.history.page(status=None, name=None, queue=None, limit=100, offset=0)
    assert history.total == 50
    first_ten = {json.dumps({"word": f"w{i}"}, separators=(",", ":")) for i in range(10)}
    assert not first_ten & {record.args for record in history.records}  # finished first
    pool = task_queue.pool
    assert len(await pool.keys("task:history:record:*")) == 50
    assert len(await pool.keys("task:timeline:*")) == 50
    assert await pool.zcard("task:history:name:shout") == 50
    assert await pool.zcard("task:history:status:complete") == 50


@asynccontextmanager
async def change_events(address: str, cookies: Cookies) -> AsyncIterator[asyncio.Queue[list[str]]]:
    """The console's event stream, as the page's EventSource reads it."""
    changes: asyncio.Queue[list[str]] = asyncio.Queue()
    client = httpx.AsyncClient(timeout=30, headers=cookies)

    async def read() -> None:
        url = f"http://{address}/console/events"
        async with client.stream("GET", url) as reply:
            assert reply.status_code == 200
            await changes.put(["open"])
            async for line in reply.aiter_lines():
                if line.startswith("data: "):
                    await changes.put(json.loads(line.removeprefix("data: ")))

    reading = asyncio.create_task(read())
    try:
        yield changes
    finally:
        reading.cancel()
        await client.aclose()


async def test_the_event_stream_names_the_tasks_that_change(
    settings: Settings, redis: Redis, task_queue: TaskQueue, run_worker: Callable[[], Any]
) -> None:
    dev = settings.model_copy(update={"environment": "development"})  # cookies without Secure
    async with serve_http(dev) as address, asyncio.timeout(30):
        async with httpx.AsyncClient(base_url=f"http://{address}") as browser:
            await sign_in(browser, TEST_KEY)
            session = cookie(SESSION_COOKIE, browser.cookies[SESSION_COOKIE])
        async with change_events(address, session) as changes:
            assert await changes.get() == ["open"]
            task_id = await task_queue.enqueue("shout", word="live")
            assert await changes.get() == [""]  # something was enqueued
            await run_worker()
            seen: set[str] = set()
            while task_id not in seen:
                seen.update(await changes.get())
