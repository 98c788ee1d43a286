"""The e-mail example against a real SMTP server (aiosmtpd) on 127.0.0.1, run by a real worker."""

import asyncio
import json
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from email.parser import BytesParser
from email.policy import default
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller
from arq.worker import Worker
from redis.asyncio import Redis

from {{ cookiecutter.__package_name }}.infrastructure.mailer import RateLimit
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.settings import Settings

REFUSED = "nobody@refused.example"


class Mailbox:
    """An SMTP handler keeping what it receives; it refuses REFUSED."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []

    async def handle_RCPT(  # noqa: N802 - aiosmtpd's hook name
        self, server: Any, session: Any, envelope: Any, address: str, options: list[str]
    ) -> str:
        if address == REFUSED:
            return "550 5.1.1 No such user"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(BytesParser(policy=default).parsebytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def mailbox() -> Iterator[tuple[Mailbox, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    handler = Mailbox()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


@pytest.fixture
def allowed_domains() -> list[str]:
    """EMAIL_ALLOWED_RECIPIENT_DOMAINS: any domain, unless a test parametrizes this."""
    return []


@pytest.fixture
def settings(
    settings: Settings, mailbox: tuple[Mailbox, int], allowed_domains: list[str]
) -> Settings:
    update = {"smtp_host": "127.0.0.1", "smtp_port": mailbox[1], "email_rate_window_s": 0.5}
    update |= {"email_rate_limit": 3, "email_allowed_recipient_domains": allowed_domains}
    return settings.model_copy(update=update)


async def submit(client: httpx.AsyncClient, name: str, args: dict[str, Any]) -> str:
    reply = await client.post("/api/v1/tasks", json={"name": name, "args": args})
    assert reply.status_code == 202, reply.text
    return reply.headers["Location"]


async def test_a_single_email_is_delivered(
    client: httpx.AsyncClient,
    make_worker: Callable[..., Worker],
    settings: Settings,
    mailbox: tuple[Mailbox, int],
) -> None:
    args = {"to": "ada@example.com", "subject": "Welcome", "body": "Hello, Ada."}
    url = await submit(client, "send_single_email", args)
    await make_worker(queue=settings.slow_task_queue).main()
    state = (await client.get(url)).json()
    assert state["status"] == "complete", state
    [message] = mailbox[0].messages
    assert (message["To"], message["Subject"]) == ("ada@example.com", "Welcome")
    assert message["From"] == settings.email_sender
    assert message["Message-ID"] == state["result"]["message_id"]
    assert message.get_content().strip() == "Hello, Ada."


async def test_a_refused_recipient_fails_the_task_without_retries(
    client: httpx.AsyncClient, make_worker: Callable[..., Worker], settings: Settings
) -> None:
    url = await submit(client, "send_single_email", {"to": REFUSED, "subject": "Hi", "body": "."})
    await make_worker(queue=settings.slow_task_queue).main()
    state = (await client.get(url)).json()
    assert state["status"] == "failed"
    assert state["tries"] == 1
    assert state["error"] == f"NonRetryableError: {REFUSED} was refused: 5.1.1 No such user"


async def test_a_bulk_send_reports_progress_and_lists_refusals(
    client: httpx.AsyncClient,
    make_worker: Callable[..., Worker],
    settings: Settings,
    mailbox: tuple[Mailbox, int],
    redis: Redis,
) -> None:
    recipients = [f"user{n}@example.com" for n in range(6)] + [REFUSED]
    url = await submit(
        client, "send_bulk_emails", {"recipients": recipients, "subject": "News", "body": "..."}
    )
    task_id = url.rsplit("/", 1)[1]
    progress: list[dict[str, Any]] = []
    async with redis.pubsub() as pubsub:
        await pubsub.subscribe(f"task:events:{task_id}")
        await make_worker(queue=settings.slow_task_queue).main()
        async with asyncio.timeout(5):
            while not progress or progress[-1]["event"] != "complete":
                message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1)
                if message:
                    progress.append(json.loads(message["data"]))
    state = (await client.get(url)).json()
    assert state["status"] == "complete", state
    assert state["result"] == {"sent": 6, "refused": [REFUSED], "total": 7}
    assert sorted(message["To"] for message in mailbox[0].messages) == recipients[:6]
    reports = [event["data"]["message"] for event in progress if event["event"] == "progress"]
    assert reports == [f"{n} / 7 sent" for n in range(1, 7)] + ["6 / 7 sent"]


async def test_the_rate_limit_holds_across_workers(redis: Redis) -> None:
    """Two senders sharing the limit get at most 3 slots per window between them."""
    limits = [RateLimit(redis, "test", limit=3, window_s=0.3) for _ in range(2)]
    windows = await asyncio.gather(*(limits[n % 2].acquire() for n in range(8)))
    per_window = sorted(Counter(windows).values(), reverse=True)
    assert per_window == [3, 3, 2]
    assert len(set(windows)) == 3


async def test_bad_addresses_and_header_injection_are_refused(client: httpx.AsyncClient) -> None:
    for args in (
        {"to": "not-an-address", "subject": "x", "body": "x"},
        {"to": "a@example.com", "subject": "x\r\nBcc: everyone@example.com", "body": "x"},
        {"to": "a@example.com, b@example.com", "subject": "x", "body": "x"},
    ):
        reply = await client.post("/api/v1/tasks", json={"name": "send_single_email", "args": args})
        assert reply.status_code == 422, args


@pytest.mark.parametrize("allowed_domains", [["example.com"]])
async def test_recipients_outside_the_allowed_domains_are_refused(
    client: httpx.AsyncClient,
    task_queue: TaskQueue,
    make_worker: Callable[..., Worker],
    settings: Settings,
    mailbox: tuple[Mailbox, int],
) -> None:
    """With EMAIL_ALLOWED_RECIPIENT_DOMAINS set, the API answers 422 for any recipient
    elsewhere and queues nothing; tasks enqueued from code, past the API, refuse them too."""
    outsider = "eve@elsewhere.example"
    for name, args in (
        ("send_single_email", {"to": outsider, "subject": "x", "body": "x"}),
        ("send_bulk_emails", {"recipients": ["ada@example.com", outsider], "subject": "x",
                              "body": "x"}),
    ):  # fmt: skip
        reply = await client.post("/api/v1/tasks", json={"name": name, "args": args})
        assert reply.status_code == 422, reply.text
        assert "EMAIL_ALLOWED_RECIPIENT_DOMAINS (example.com)" in reply.text
        assert outsider not in reply.text
    assert (await task_queue.metrics()).depths[settings.slow_task_queue] == 0
    allowed = await submit(
        client, "send_single_email", {"to": "Ada@EXAMPLE.com", "subject": "x", "body": "x"}
    )

    slow = settings.slow_task_queue
    single = await task_queue.enqueue(
        "send_single_email", to=outsider, subject="x", body="x", _queue_name=slow
    )
    bulk = await task_queue.enqueue(
        "send_bulk_emails", recipients=["grace@example.com", outsider], subject="x", body="x",
        _queue_name=slow,
    )  # fmt: skip
    assert single
    assert bulk
    await make_worker(queue=slow).main()
    assert (await client.get(allowed)).json()["status"] == "complete"
    refused = (await client.get(f"/api/v1/tasks/{single}")).json()
    assert (refused["status"], refused["tries"]) == ("failed", 1)
    assert "outside EMAIL_ALLOWED_RECIPIENT_DOMAINS" in refused["error"]
    result = (await client.get(f"/api/v1/tasks/{bulk}")).json()["result"]
    assert result == {"sent": 1, "refused": [outsider], "total": 2}
    delivered = sorted(message["To"] for message in mailbox[0].messages)
    assert delivered == ["Ada@EXAMPLE.com", "grace@example.com"]


def test_allowed_domains_are_read_as_a_list() -> None:
    settings = Settings(
        email_allowed_recipient_domains=" Example.com, corp.example ,", _env_file=None
    )
    assert settings.email_allowed_recipient_domains == ["example.com", "corp.example"]
