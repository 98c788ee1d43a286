"""The database's worked example: a user is created and its welcome task enqueued in one
transaction, so that neither happens without the other."""

from dataclasses import dataclass

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from ..access import Principal
from ..infrastructure.models import User
from ..infrastructure.queue import enqueue_task
from ..settings import Settings


class EmailTakenError(Exception):
    def __init__(self, email: str) -> None:
        super().__init__(f"A user with the e-mail address {email!r} already exists.")


@dataclass(frozen=True)
class CreatedUser:
    user: User
    welcome_task_id: str  # the submitter may follow it as any task of its own


async def create_user(
    session: AsyncSession, settings: Settings, principal: Principal, *, email: str, name: str
) -> CreatedUser:
    """Insert the user and, in the same transaction, its welcome task (enqueued on commit)."""
    email = email.lower()
    try:
        async with session.begin():
            user = User(email=email, name=name)
            session.add(user)
            await session.flush()  # a taken address fails here, before anything is enqueued
            task_id = await enqueue_task(
{%- if cookiecutter.__examples == "yes" %}
                "send_single_email",
                to=email,
                subject=f"Welcome to {settings.app_name}",
                body=f"Hello {name},\n\nyour account is ready.\n",
                _queue_name=settings.slow_task_queue,
{%- else %}
                "example_task",
                message=f"Welcome to {settings.app_name}, {name}!",
                steps=1,
{%- endif %}
                _job_id=principal.task_id(None),
                session=session,
            )
    except IntegrityError as exc:
        raise EmailTakenError(email) from exc
    assert task_id is not None  # an enqueue on commit always gives its id
    return CreatedUser(user, task_id)
