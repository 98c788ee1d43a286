"""POST /api/v1/users: the user and its welcome task, stored together or not at all."""

import asyncio
import contextlib
import os
import signal
from pathlib import Path
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import asyncpg
import httpx
from alembic import command
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from {{ cookiecutter.__package_name }}.access import create_key
from {{ cookiecutter.__package_name }}.devtools.embedded_postgres import EmbeddedPostgres
from {{ cookiecutter.__package_name }}.infrastructure.database import session_factory
from {{ cookiecutter.__package_name }}.infrastructure.models import OutboxTask, User
from {{ cookiecutter.__package_name }}.infrastructure.outbox_relay import OutboxRelay
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.infrastructure.redis import texts
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.migrate import alembic_config
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import bearer, free_port, serve

{% if cookiecutter.__examples == "yes" -%}
WELCOME_TASK = "send_single_email"
{%- else -%}
WELCOME_TASK = "example_task"
{%- endif %}


async def count(database: AsyncEngine, table: type[User] | type[OutboxTask]) -> int:
    async with session_factory(database)() as session:
        return int(await session.scalar(select(func.count()).select_from(table)) or 0)


async def test_a_new_user_s_welcome_task_is_enqueued_on_commit(
    client: httpx.AsyncClient, database: AsyncEngine, task_queue: TaskQueue
) -> None:
    """201 with the user and its welcome task's id, which the outbox holds until the relay
    puts it on the queue; then its submitter follows it like any task of its own."""
    response = await client.post("/api/v1/users", json={"email": "Ada@Example.com", "name": "Ada"})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["email"] == "ada@example.com"
    assert body["name"] == "Ada"
    assert body["created_at"]
    task_id = body["welcome_task_id"]
    async with session_factory(database)() as session:
        row = await session.get(OutboxTask, task_id)
    assert row is not None
    assert row.name == WELCOME_TASK
    assert (await client.get(f"/api/v1/tasks/{task_id}")).status_code == 404  # not yet queued
    assert await OutboxRelay(database, task_queue, poll_interval_s=1).relay_once() == 1
    task = await client.get(f"/api/v1/tasks/{task_id}")
    assert task.status_code == 200, task.text
    assert task.json()["name"] == WELCOME_TASK
    assert task.json()["status"] == "queued"


async def test_a_taken_address_or_bad_input_changes_nothing(
    client: httpx.AsyncClient, database: AsyncEngine
) -> None:
    """409 for an address already taken (in any case), 422 for bad input: no user and no task
    is added by either."""
    user = {"email": "grace@example.com", "name": "Grace"}
    assert (await client.post("/api/v1/users", json=user)).status_code == 201
    again = await client.post("/api/v1/users", json={**user, "email": "GRACE@example.com"})
    assert again.status_code == 409
    assert "already exists" in again.json()["detail"]
    for bad in (
        {"email": "not-an-address", "name": "X"},
        {"email": "x@example.com", "name": ""},
        {"email": "x@example.com", "name": "X", "admin": True},
        {"email": "x\u0000y@example.com", "name": "X"},
        {"email": "x@example.com", "name": "nul \u0000 inside"},
    ):
        assert (await client.post("/api/v1/users", json=bad)).status_code == 422, bad
    # JSON may escape a lone surrogate, which no database text can hold.
    surrogate = b'{"email": "x@example.com", "name": "lone \\ud800 surrogate"}'
    headers = {"Content-Type": "application/json"}
    response = await client.post("/api/v1/users", content=surrogate, headers=headers)
    assert response.status_code == 422
    assert await count(database, User) == 1
    assert await count(database, OutboxTask) == 1


async def test_creating_users_needs_the_submit_scope(
    settings: Settings, database: AsyncEngine
) -> None:
    """It enqueues a task, so it takes what submitting one takes: 401 without a key, 403 with
    a key that may only read."""
    reader_key, reader = create_key("reader", ["tasks:read"])
    app = create_app(settings.model_copy(update={"api_keys": [*settings.api_keys, reader]}))
    user = {"email": "lin@example.com", "name": "Lin"}
    async with serve(app, key=None) as client:
        assert (await client.post("/api/v1/users", json=user)).status_code == 401
        denied = await client.post("/api/v1/users", json=user, headers=bearer(reader_key))
        assert denied.status_code == 403
    assert await count(database, User) == 0


async def test_a_thousand_concurrent_sign_ups_give_a_thousand_tasks(
    client: httpx.AsyncClient, database: AsyncEngine, task_queue: TaskQueue
) -> None:
    """1,000 requests at once, 100 in flight: 1,000 users, and after the relay exactly 1,000
    distinct welcome tasks on the queue, none left in the outbox."""
    total, in_flight = 1_000, asyncio.Semaphore(100)

    async def sign_up(n: int) -> str:
        async with in_flight:
            user = {"email": f"user{n}@example.com", "name": f"User {n}"}
            response = await client.post("/api/v1/users", json=user)
        assert response.status_code == 201, response.text
        return str(response.json()["welcome_task_id"])

    task_ids = await asyncio.gather(*(sign_up(n) for n in range(total)))
    assert len(set(task_ids)) == total
    assert await count(database, User) == total
    assert await OutboxRelay(database, task_queue, poll_interval_s=1).relay_once() == total
    assert await count(database, OutboxTask) == 0
    queue = task_queue.settings.{% if cookiecutter.__examples == "yes" %}slow_task_queue{% else %}task_queue{% endif %}
    queued = await task_queue.pool.zrange(queue, 0, -1)
    assert sorted(texts(queued)) == sorted(task_ids)


class Cable:
    """A TCP forwarder to the database that the test can unplug and plug in again."""

    def __init__(self, target: str) -> None:
        parts = urlsplit(target)
        query = dict(parse_qsl(parts.query))
        socket_dir = query.pop("host", "") if query.get("host", "").startswith("/") else ""
        port = parts.port or int(query.pop("port", "5432"))
        # The embedded server listens on a Unix socket; a CI service container on TCP.
        self.socket = f"{socket_dir}/.s.PGSQL.{port}" if socket_dir else ""
        self.host, self.port = parts.hostname or "127.0.0.1", port
        self.listen_port = free_port()
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.listen_port}" if credentials else ""
        netloc = netloc or f"127.0.0.1:{self.listen_port}"
        self.url = urlunsplit(parts._replace(netloc=netloc, query=urlencode(query)))
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._muted = False

    async def plug(self) -> None:
        self._server = await asyncio.start_server(self._link, "127.0.0.1", self.listen_port)

    async def unplug(self) -> None:
        """Refuse new connections and cut the open ones, as a stopped server does."""
        assert self._server is not None
        self._server.close()
        for writer in list(self._links):
            writer.close()
        await self._server.wait_closed()

    def mute(self, muted: bool = True) -> None:
        """Cut the open connections and take new ones without ever answering, as a server
        that stopped responding does (or, with False, forward them again)."""
        self._muted = muted
        for writer in list(self._links):
            writer.close()

    async def _link(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._muted:
            self._links.add(writer)
            with contextlib.suppress(OSError):
                await reader.read()  # until the client gives up
            writer.close()
            self._links.discard(writer)
            return
        if self.socket:
            up_reader, up_writer = await asyncio.open_unix_connection(self.socket)
        else:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        self._links |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await source.read(65_536):
                    sink.write(data)
                    await sink.drain()
            sink.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._links -= {writer, up_writer}


async def test_while_the_database_is_unreachable_its_routes_answer_503_then_recover(
    settings: Settings, database: AsyncEngine
) -> None:
    """With the database unplugged (connections refused and cut) or mute (connections taken,
    never answered), creating a user is a 503 with Retry-After and a sentence naming the
    database, never a 500; plugged in again, the same app serves it without a restart."""
    cable = Cable(settings.database_url.get_secret_value())
    await cable.plug()
    own = settings.model_copy(
        update={"database_url": SecretStr(cable.url), "database_connect_timeout_s": 1.0}
    )
    async with serve(create_app(own)) as client:
        first = await client.post("/api/v1/users", json={"email": "a@example.com", "name": "A"})
        assert first.status_code == 201, first.text
        await cable.unplug()
        for email in ("b@example.com", "c@example.com"):  # a fresh connection, a pooled one
            down = await client.post("/api/v1/users", json={"email": email, "name": "B"})
            assert down.status_code == 503, down.text
            assert "database" in down.json()["detail"]
            assert down.headers["Retry-After"]
        await cable.plug()
        back = await client.post("/api/v1/users", json={"email": "b@example.com", "name": "B"})
        assert back.status_code == 201, back.text
        cable.mute()
        mute = await client.post("/api/v1/users", json={"email": "c@example.com", "name": "C"})
        assert mute.status_code == 503, mute.text
        assert "database" in mute.json()["detail"]
        assert mute.headers["Retry-After"]
        cable.mute(False)
        back = await client.post("/api/v1/users", json={"email": "c@example.com", "name": "C"})
        assert back.status_code == 201, back.text
    await cable.unplug()
    assert await count(database, User) == 3


async def test_a_database_shutting_down_answers_503_then_serves_again(
    settings: Settings, workdir: Path
) -> None:
    """While PostgreSQL shuts down (a smart shutdown waits for its open sessions and refuses
    new ones, "the database system is shutting down"), creating a user is a 503 naming the
    database; once the server is back, the same app serves it."""
    server = EmbeddedPostgres(workdir / "pgdata")
    server.start()
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(server.url), "head")
        database_url = Settings(database_url=server.url, _env_file=None).database_url
        own = settings.model_copy(update={"database_url": database_url})
        holder = await asyncpg.connect(server.url)  # keeps the shutdown from ending
        postmaster = workdir / "pgdata" / "postmaster.pid"
        os.kill(int(postmaster.read_text().split()[0]), signal.SIGTERM)  # a smart shutdown
        async with serve(create_app(own)) as client:
            down = await client.post("/api/v1/users", json={"email": "a@example.com", "name": "A"})
            assert down.status_code == 503, down.text
            assert "database" in down.json()["detail"]
            assert down.headers["Retry-After"]
            assert await holder.fetchval("SELECT 1") == 1  # it was shutting down, not gone
            await holder.close()
            server.stop()
            server.start()
            back = await client.post("/api/v1/users", json={"email": "a@example.com", "name": "A"})
            assert back.status_code == 201, back.text
    finally:
        server.stop()
