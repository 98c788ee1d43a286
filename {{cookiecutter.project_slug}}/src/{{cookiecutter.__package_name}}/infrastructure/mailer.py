"""Outgoing e-mail over SMTP (aiosmtplib), and a send rate shared by every worker."""

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from email.utils import make_msgid

from aiosmtplib import SMTP
from redis.asyncio import Redis

from ..settings import Settings

RATE_KEY = "email:rate:"


def compose(settings: Settings, to: str, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.email_sender
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = make_msgid(domain=settings.email_sender.rpartition("@")[2])
    message.set_content(body)
    return message


@asynccontextmanager
async def smtp_connection(settings: Settings) -> AsyncIterator[SMTP]:
    """One SMTP session, logged in when SMTP_USERNAME is set; closed on exit."""
    password = settings.smtp_password.get_secret_value() if settings.smtp_password else None
    client = SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username or None,
        password=password,
        start_tls=settings.smtp_starttls,
        timeout=settings.smtp_timeout_s,
    )
    async with client:
        yield client


class RateLimit:
    """At most `limit` acquisitions per window of `window_s` seconds, counted in Redis so that
    every worker shares the budget (a fixed window: simple, and bursts stay within the limit)."""

    def __init__(self, redis: Redis, name: str, *, limit: int, window_s: float) -> None:
        self._redis = redis
        self._key = RATE_KEY + name + ":"
        self._limit = limit
        self._window_s = window_s

    async def acquire(self) -> int:
        """Wait until the current window has room; returns the number of that window."""
        while True:
            now = time.time()
            window = int(now // self._window_s)
            key = f"{self._key}{window}"
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.incr(key)
                pipe.pexpire(key, int(self._window_s * 2_000) + 1)
                count, _ = await pipe.execute()
            if count <= self._limit:
                return window
            await asyncio.sleep((window + 1) * self._window_s - now)
