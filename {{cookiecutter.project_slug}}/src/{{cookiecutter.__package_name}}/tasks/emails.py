"""The e-mail example: one message, or many under a rate limit with "450 / 10,000 sent" progress.

Both run on the slow queue. A refused recipient is not retried; a lost connection is (the
task's ordinary retries), and a bulk send picks up after the last message it sent. With
EMAIL_ALLOWED_RECIPIENT_DOMAINS set, other recipients are refused: by the API (422, when the
settings are passed as validation context) and again by the tasks, for enqueues from code.
"""

from collections.abc import Iterable
from email.message import EmailMessage
from typing import Annotated, Any

from aiosmtplib import SMTP, SMTPRecipientsRefused, SMTPResponseException
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    field_validator,
)

from ..infrastructure.mailer import RateLimit, compose, smtp_connection
from ..infrastructure.queue import NonRetryableError, report_progress
from ..settings import Settings

Address = Annotated[str, StringConstraints(pattern=r"^[^@\s<>,]+@[^@\s<>,]+\.[^@\s<>,.]+$")]
Subject = Annotated[str, StringConstraints(min_length=1, max_length=200, pattern=r"^[^\r\n]*$")]
Body = Annotated[str, StringConstraints(max_length=100_000)]
# Where a bulk send records how many recipients it has handled, for a retry to resume from.
DONE_KEY = "email:bulk:done:"
DONE_TTL_S = 7 * 24 * 3600


def allowed(settings: Settings, address: str) -> bool:
    """True when EMAIL_ALLOWED_RECIPIENT_DOMAINS is empty or holds the address's domain."""
    domains = settings.email_allowed_recipient_domains
    return not domains or address.rpartition("@")[2].lower() in domains


def check_domains(addresses: Iterable[str], info: ValidationInfo) -> None:
    settings = (info.context or {}).get("settings")
    if not isinstance(settings, Settings):
        return
    outside = sum(not allowed(settings, address) for address in addresses)
    if outside:
        domains = ", ".join(settings.email_allowed_recipient_domains)
        raise ValueError(
            f"{outside} recipient(s) outside EMAIL_ALLOWED_RECIPIENT_DOMAINS ({domains})"
        )


class SingleEmailArgs(BaseModel):
    """What `POST /api/v1/tasks` accepts as `args` for `send_single_email`."""

    model_config = ConfigDict(extra="forbid")

    to: Address
    subject: Subject
    body: Body

    @field_validator("to")
    @classmethod
    def to_allowed_domain(cls, to: str, info: ValidationInfo) -> str:
        check_domains([to], info)
        return to


class BulkEmailArgs(BaseModel):
    """What `POST /api/v1/tasks` accepts as `args` for `send_bulk_emails`."""

    model_config = ConfigDict(extra="forbid")

    # Over HTTP, a list fits in API_MAX_BODY_BYTES; enqueue longer ones from code.
    recipients: list[Address] = Field(min_length=1, max_length=1_000)
    subject: Subject
    body: Body

    @field_validator("recipients")
    @classmethod
    def to_allowed_domains(cls, recipients: list[str], info: ValidationInfo) -> list[str]:
        check_domains(recipients, info)
        return recipients


def rate_limit(ctx: dict[str, Any]) -> RateLimit:
    settings: Settings = ctx["settings"]
    return RateLimit(
        ctx["redis"],
        "smtp",
        limit=settings.email_rate_limit,
        window_s=settings.email_rate_window_s,
    )


async def deliver(smtp: SMTP, limit: RateLimit, message: EmailMessage) -> bool:
    """Send within the rate limit; False when the server refuses the recipient for good."""
    await limit.acquire()
    try:
        await smtp.send_message(message)
    except SMTPRecipientsRefused:
        return False
    except SMTPResponseException as exc:
        if exc.code < 500:
            raise  # a temporary failure: the task's retry resumes from here
        return False
    return True


async def send_single_email(
    ctx: dict[str, Any], to: str, subject: str, body: str
) -> dict[str, Any]:
    """Send one message; a recipient the server refuses fails the task without retries."""
    settings: Settings = ctx["settings"]
    if not allowed(settings, to):
        raise NonRetryableError(f"{to} is outside EMAIL_ALLOWED_RECIPIENT_DOMAINS.")
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
            message = compose(settings, to, subject, body)
            if not allowed(settings, to) or not await deliver(smtp, limit, message):
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
