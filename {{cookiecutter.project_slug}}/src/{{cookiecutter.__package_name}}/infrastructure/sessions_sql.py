"""Server-side sessions in the database: one row per session, keyed by its token's SHA-256.

A session past its expiry is no longer read; the `cleanup_expired_sessions` cron job deletes
those rows.
"""

import hashlib
import secrets
import uuid
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select

from .database import Sessions
from .models import UserSession


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class SessionStore:
    """Create, read and end sessions; `cleanup_expired` deletes expired ones."""

    def __init__(self, sessions: Sessions, *, ttl_s: int) -> None:
        self._sessions = sessions
        self._ttl = timedelta(seconds=ttl_s)

    async def create(self, user_id: uuid.UUID) -> str:
        """Start a session for `user_id`; returns its unguessable token (only its digest is
        stored)."""
        token = secrets.token_urlsafe(32)
        expires_at = datetime.now(UTC) + self._ttl
        row = UserSession(token_sha256=token_digest(token), user_id=user_id, expires_at=expires_at)
        async with self._sessions() as session, session.begin():
            session.add(row)
        return token

    async def user_id(self, token: str) -> uuid.UUID | None:
        """The session's user, or None when it ended or expired."""
        async with self._sessions() as session:
            found: uuid.UUID | None = await session.scalar(
                select(UserSession.user_id).where(
                    UserSession.token_sha256 == token_digest(token),
                    UserSession.expires_at > datetime.now(UTC),
                )
            )
        return found

    async def end(self, token: str) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                delete(UserSession).where(UserSession.token_sha256 == token_digest(token))
            )

    async def cleanup_expired(self, now: datetime | None = None) -> int:
        """Delete the sessions whose expiry has passed; returns how many."""
        cutoff = now or datetime.now(UTC)
        async with self._sessions() as session, session.begin():
            deleted = await session.scalars(
                delete(UserSession)
                .where(UserSession.expires_at <= cutoff)
                .returning(UserSession.token_sha256)
            )
            return len(deleted.all())
