"""The tables. A change here is followed by a migration: `just makemigration "what changed"`."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import DateTime, ForeignKey, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from .database import Base


class User(Base):
    """A user of the worked example (POST /api/v1/users)."""

    __tablename__ = "users"
    # Read the server's defaults (created_at) back on insert, in the same statement.
    __mapper_args__ = {"eager_defaults": True}  # noqa: RUF012 - SQLAlchemy's own attribute

    id: Mapped[uuid.UUID] = mapped_column(primary_key=True, default=uuid.uuid4)
    # Kept lower-case, so that one address gives one user.
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class UserSession(Base):
    """A signed-in user's session; only the SHA-256 of its token is kept."""

    __tablename__ = "user_sessions"

    token_sha256: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)


class OutboxTask(Base):
    """A task written in a transaction and not yet on the queue (infrastructure/outbox.py).

    Inserting rows notifies the relay when the transaction commits (a trigger in the first
    migration); the relay enqueues each with `task_id` as its id, then deletes it.
    """

    __tablename__ = "task_outbox"

    task_id: Mapped[str] = mapped_column(String(200), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    queue: Mapped[str | None] = mapped_column(String(200))
    args: Mapped[list[Any]] = mapped_column(JSONB)
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # Not to run before this time (`_defer_by`); None: as soon as it is on the queue.
    defer_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    # The enqueuing side's context (its request id), which travels with the task.
    meta: Mapped[dict[str, str]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=func.now(), index=True
    )
