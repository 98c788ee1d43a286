"""Signing in to the operator console: a session cookie for operators, a CSRF token for every
form, and the headers that keep the pages out of frames and other origins' scripts.

The session lives in Redis under the SHA-256 of the cookie's value. A session opened with an
API key ends as soon as the key leaves API_KEYS or loses the operator scope; one opened with a
token of the identity provider, when the token expires.
"""

import hashlib
import hmac
import json
import secrets
import time
from dataclasses import asdict, dataclass
from typing import Annotated
from urllib.parse import parse_qsl, quote

import jwt
from fastapi import Depends, HTTPException, Request, status
from redis.asyncio import Redis

from ..access import Principal, hash_key
from ..settings import Settings
from .auth import Access

SESSION_COOKIE = "console_session"
SIGN_IN_COOKIE = "console_sign_in"  # the sign-in form's CSRF token, submitted twice
SESSION_PREFIX = "console:session:"
CONSOLE_PATH = "/console"
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class ConsoleSession:
    operator: str  # the principal's name, as the action logs show it
    csrf: str
    key_sha256: str | None  # when signed in with an API key


class ConsoleSessions:
    def __init__(self, redis: Redis, ttl_s: int) -> None:
        self._redis = redis
        self._ttl_s = ttl_s

    async def open(self, principal: Principal, credential: str) -> str:
        """A new session for `principal`, who signed in with `credential` (an API key, or a
        verified JWT: then the session ends when the token does); the cookie's value."""
        token = secrets.token_urlsafe(32)
        ttl_s, key_sha256 = self._ttl_s, None
        if credential.count(".") == 2:
            expires = jwt.decode(credential, options={"verify_signature": False}).get("exp")
            if isinstance(expires, int | float):
                ttl_s = max(1, min(ttl_s, int(expires - time.time())))
        else:
            key_sha256 = hash_key(credential)
        session = ConsoleSession(principal.name, secrets.token_urlsafe(32), key_sha256)
        await self._redis.set(_key(token), json.dumps(asdict(session)), ex=ttl_s)
        return token

    async def get(self, token: str) -> ConsoleSession | None:
        raw = await self._redis.get(_key(token))
        return ConsoleSession(**json.loads(raw)) if raw else None

    async def close(self, token: str) -> None:
        await self._redis.delete(_key(token))


def _key(token: str) -> str:
    return SESSION_PREFIX + hashlib.sha256(token.encode()).hexdigest()


def sessions_of(request: Request) -> ConsoleSessions:
    """The sessions, kept on the task layer's Redis connection pool."""
    pool: Redis = request.app.state.task_queue.pool
    settings: Settings = request.app.state.settings
    return ConsoleSessions(pool, settings.console_session_ttl_s)


def secure_cookies(request: Request) -> bool:
    settings: Settings = request.app.state.settings
    return settings.environment != "development"


async def current_session(request: Request) -> ConsoleSession | None:
    """The operator's session of this request, if it is still good."""
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    session = await sessions_of(request).get(token)
    if session is None:
        return None
    access: Access = request.app.state.access
    if session.key_sha256 is not None and not access.disabled:
        principal = access.principals.get(session.key_sha256)
        if principal is None or not principal.is_operator:
            return None
    return session


async def require_session(request: Request) -> ConsoleSession:
    """The operator's session; without one, pages go to the sign-in page, the event stream
    gets 401."""
    session = await current_session(request)
    if session is not None:
        return session
    if request.url.path == CONSOLE_PATH + "/events":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "Sign in to the console first.")
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    raise HTTPException(
        status.HTTP_303_SEE_OTHER,
        headers={"Location": f"{CONSOLE_PATH}/sign-in?next={quote(target, safe='')}"},
    )


Session = Annotated[ConsoleSession, Depends(require_session)]


async def read_form(request: Request) -> dict[str, str]:
    """The fields of a urlencoded form (its size is bounded by API_MAX_BODY_BYTES)."""
    body = (await request.body()).decode("utf-8", errors="replace")
    return dict(parse_qsl(body, keep_blank_values=True))


def check_csrf(expected: str, form: dict[str, str]) -> None:
    """A form must carry the token its page was given: another site cannot post it. An empty
    expected token (no cookie) matches nothing, not even an empty field."""
    if not expected or not hmac.compare_digest(form.get("csrf", "").encode(), expected.encode()):
        raise HTTPException(
            status.HTTP_403_FORBIDDEN, "This form has expired: reload the page and try again."
        )


def safe_next(target: str | None) -> str:
    """Where to go after signing in: a console page, never another site."""
    if target and target.startswith(CONSOLE_PATH) and "//" not in target and "\\" not in target:
        return target
    return CONSOLE_PATH
