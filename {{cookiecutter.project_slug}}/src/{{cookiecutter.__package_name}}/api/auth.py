"""Access control over HTTP: whom a request acts for, and the scope each route needs.

A missing or unknown credential gets 401 with `WWW-Authenticate: Bearer`; a known one without
the scope, 403. Another principal's task is answered 404, exactly as an unknown id.
"""

import secrets
from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, HTTPException, status
from fastapi.requests import HTTPConnection
from fastapi.security import HTTPBearer

from ..access import SCOPES, FollowTokens, Principal, hash_key
from ..infrastructure.oidc import InvalidTokenError, JwksUnavailableError, JwtVerifier
from ..services.tasks import TaskNotFoundError
from ..settings import Settings

JWKS_RETRY_AFTER_S = 30
# Everyone, while AUTH_DISABLED=true in development.
DEVELOPER = Principal("development", frozenset(SCOPES))


class AccessSettingsError(RuntimeError):
    """The settings leave the API open where they must not, or closed to everyone."""


def check_access_settings(settings: Settings) -> None:
    """Refuse to serve with access control off outside development, or in production with
    no way to authenticate, no shared secret for the events links, or /metrics open by
    accident."""
    if settings.auth_disabled and settings.environment != "development":
        raise AccessSettingsError(
            f"AUTH_DISABLED=true is honoured only with ENVIRONMENT=development (it is "
            f"{settings.environment}): remove it and give clients API keys."
        )
    if settings.environment == "production":
        can_authenticate = settings.api_keys or settings.auth_jwks_url
        missing = [] if can_authenticate else ["API_KEYS (or AUTH_JWT_*)"]
        if settings.follow_token_secret is None:
            missing.append("FOLLOW_TOKEN_SECRET")
        if settings.metrics_token is None and not settings.metrics_public:
            missing.append("METRICS_TOKEN (or METRICS_PUBLIC=true)")
        if missing:
            raise AccessSettingsError(
                f"In production the API needs {', '.join(missing)}: API_KEYS lets clients "
                "in (make entries with `just key NAME --scope SCOPE`), or AUTH_JWT_ISSUER, "
                "AUTH_JWT_AUDIENCE and AUTH_JWKS_URL accept your identity provider's tokens; "
                "FOLLOW_TOKEN_SECRET signs the events links and must be the same random "
                "string on every API process; METRICS_TOKEN is the bearer token of your "
                "scraper (METRICS_PUBLIC=true leaves /metrics open on purpose)."
            )


class Access:
    """What one API process knows to authenticate requests; built once at start-up."""

    def __init__(self, settings: Settings) -> None:
        self.disabled = settings.auth_disabled
        self.principals = {key.sha256: key.principal for key in settings.api_keys}
        secret = settings.follow_token_secret
        self.follow_tokens = FollowTokens(
            secret.get_secret_value().encode() if secret else secrets.token_bytes(32),
            settings.follow_token_ttl_s,
        )
        self.jwt: JwtVerifier | None = None
        if settings.auth_jwt_issuer and settings.auth_jwt_audience and settings.auth_jwks_url:
            self.jwt = JwtVerifier(
                settings.auth_jwt_issuer, settings.auth_jwt_audience, str(settings.auth_jwks_url)
            )

    async def principal(self, credential: str | None) -> Principal | None:
        """Whom `credential` (an API key, or a JWT when those are accepted) stands for; None
        when it stands for no one. InvalidTokenError says why a JWT is refused."""
        if self.disabled:
            return DEVELOPER
        if not credential:
            return None
        if self.jwt is not None and credential.count(".") == 2:
            return await self.jwt.principal(credential)
        return self.principals.get(hash_key(credential))

    async def authenticate(self, credential: str | None) -> Principal:
        """The principal of `credential`, or the HTTPException to answer with."""
        try:
            principal = await self.principal(credential)
        except InvalidTokenError as exc:
            raise unauthorized(str(exc)) from exc
        except JwksUnavailableError as exc:
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE,
                "The identity provider's keys cannot be fetched right now; retry shortly.",
                headers={"Retry-After": str(JWKS_RETRY_AFTER_S)},
            ) from exc
        if principal is None:
            if credential is None:
                raise unauthorized("This needs an API key: Authorization: Bearer <key>.")
            raise unauthorized("This API key is not known.")
        return principal


def unauthorized(detail: str) -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"}
    )


def forbidden(scope: str) -> HTTPException:
    return HTTPException(status.HTTP_403_FORBIDDEN, f"This needs the scope {scope}.")


def bearer_credential(connection: HTTPConnection) -> str | None:
    """The credential of `Authorization: Bearer <credential>`, on HTTP requests and WebSocket
    handshakes alike."""
    scheme, _, credential = connection.headers.get("authorization", "").partition(" ")
    return credential.strip() or None if scheme.lower() == "bearer" else None


def access_of(connection: HTTPConnection) -> Access:
    access: Access = connection.app.state.access
    return access


class BearerAuth(HTTPBearer):
    """The principal of a request's bearer credential: one dependency (each one costs a few
    microseconds per request), documented in the OpenAPI schema as a bearer scheme."""

    async def __call__(self, connection: HTTPConnection) -> Principal:  # type: ignore[override]
        return await access_of(connection).authenticate(bearer_credential(connection))


bearer_auth = BearerAuth(
    auto_error=False,
    scheme_name="ApiKey",
    description="An API key (`just key NAME --scope ...`), or a JWT of the identity provider",
)
Authenticated = Annotated[Principal, Depends(bearer_auth)]


def require(scope: str) -> Callable[[Principal], Awaitable[Principal]]:
    """A dependency passing principals that hold `scope` (operators hold every scope)."""

    async def check(principal: Authenticated) -> Principal:
        if not principal.can(scope):
            raise forbidden(scope)
        return principal

    return check


def check_visible(principal: Principal, task_id: str) -> None:
    """Another principal's task does not exist for this one."""
    if not principal.can_see(task_id):
        raise TaskNotFoundError(task_id)
