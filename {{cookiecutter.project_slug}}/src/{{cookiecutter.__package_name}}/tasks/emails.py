"""The e-mail example: one message, or many under a rate limit with "450 / 10,000 sent" progress.

Both run on the slow queue. A refused recipient is not retried; a lost connection is (the
task's ordinary retries), and a bulk send picks up after the last message it sent.
"""

from typing import Annotated, Any

from aiosmtplib import SMTPRecipientsRefused, SMTPResponseException
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from ..infrastructure.mailer import RateLimit, compose, smtp_connection
from ..infrastructure.queue import NonRetryableError, report_progress
from ..settings import Settings

Address = Annotated[str, StringConstraints(pattern=r"^[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,.]+$")]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\r\n]*$")]
Body = Annotated[str, StringConstraints(max_length=100_000)]
# Where a bulk send records how many recipients it has handled, for a retry to resume from.
DONE_KEY = "email:bulk:done:"
DONE_TTL_S = 7 * 24 * 3600


class SingleEmailArgs(BaseModel):
    """What `POST /api/v1/tasks` accepts as `args` for `send_single_email`."""

    model_config = ConfigDict(extra="forbid")

    to: Address
    subject: Subject
    body: Body


class BulkEmailArgs(BaseModel):
    """What `POST /api/v1/tasks` accepts as `args` for `send_bulk_emails`."""

    model_config = ConfigDict(extra="forbid")

    # Over HTTP, a list fits in API_MAX_BODY_BYTES; enqueue longer ones from code.
    recipients: list[Address] = Field(min_length=1, max_length=1_000)
    subject: Subject
    body: Body


def rate_limit(ctx: dict[str, Any]) -> RateLimit:
    settings: Settings = ctx["settings"]
    return RateLimit(
        ctx["redis"],
        "smtp",
        limit=settings.email_rate_limit,
        window_s=settings.email_rate_window_s,
    )


async def send_single_email(
    ctx: dict[str, Any], to: str, subject: str, body: str
) -> dict[str, Any]:
    """Send one message; a recipient the server refuses fails the task without retries."""
    settings: Settings = ctx["settings"]
    message = compose(settings, to, subject, body)
    await rate_limit(ctx).acquire()
    async with smtp_connection(settings) as smtp:
        try:
            await smtp.send_message(message)
        except SMTPRecipientsRefused as exc:
            raise NonRetryableError(f"{to} was refused: {exc.recipients[0].message}") from exc
    return {"to": to, "message_id": message["Message-ID"]}


async def send_bulk_emails(
    ctx: dict[str, Any], recipients: list[str], subject: str, body: str
) -> dict[str, Any]:
    """Send the same message to each recipient over one SMTP session, within the rate limit,
    reporting "n / total sent". Refused recipients are listed in the result, not retried."""
    settings: Settings = ctx["settings"]
    redis = ctx["redis"]
    done_key = DONE_KEY + ctx["job_id"]
    start = int(await redis.get(done_key) or 0)
    total = len(recipients)
    every = max(1, total // 100)  # about a hundred progress events, however long the list
    limit = rate_limit(ctx)
    refused: list[str] = []
    async with smtp_connection(settings) as smtp:
        for done, to in enumerate(recipients[start:], start=start + 1):
            await limit.acquire()
            try:
                await smtp.send_message(compose(settings, to, subject, body))
            except SMTPRecipientsRefused:
                refused.append(to)
            except SMTPResponseException as exc:
                if exc.code < 500:
                    raise  # a temporary failure: the task's retry resumes from here
                refused.append(to)
            await redis.set(done_key, done, ex=DONE_TTL_S)
            if done % every == 0 or done == total:
                sent = done - len(refused)
                await report_progress(
                    ctx,
                    done * 100 // total,
                    data={"sent": sent, "refused": len(refused), "total": total,
                          "message": f"{sent:,} / {total:,} sent"},
                )  # fmt: skip
    await redis.delete(done_key)
    # Recipients refused in an earlier try (before a retry resumed) count as sent here.
    return {"sent": total - len(refused), "refused": refused, "total": total}
