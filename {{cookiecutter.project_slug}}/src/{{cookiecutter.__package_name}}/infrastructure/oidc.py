"""Bearer JWTs from an OpenID Connect identity provider: the service as a resource server.

A token passes when an asymmetric signature verifies with a key of the issuer's JWKS, and its
`iss`, `aud`, `exp` (and `nbf`, when present) hold. Its `sub` names the principal; its scopes
come from `scope` (space-separated) or `scp` (a list, or space-separated).

The JWKS is fetched in a thread, never on the event loop, and kept: again after
JWKS_MAX_AGE_S, or when a token names a key id it lacks (a rotation), but at most once per
JWKS_MIN_REFETCH_S, so that tokens with made-up key ids cannot make it fetch on every request.
"""

import asyncio
import json
import logging
import time
import urllib.request
from typing import Any

import jwt
from jwt import PyJWK, PyJWKSet
from jwt.exceptions import PyJWKSetError

from ..access import Principal

logger = logging.getLogger(__name__)
ASYMMETRIC = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
JWKS_MAX_AGE_S = 3600.0
JWKS_MIN_REFETCH_S = 30.0
JWKS_TIMEOUT_S = 5.0
LEEWAY_S = 30  # clock skew allowed on exp and nbf


class InvalidTokenError(Exception):
    """The token is not one this service accepts; the message says why."""


class JwksUnavailableError(Exception):
    """The issuer's keys cannot be fetched right now."""


def fetch_jwks(url: str) -> dict[str, PyJWK]:
    """The signing keys at `url` by key id (blocking: run it in a thread)."""
    with urllib.request.urlopen(url, timeout=JWKS_TIMEOUT_S) as response:  # noqa: S310
        document: dict[str, Any] = json.load(response)
    keys = PyJWKSet.from_dict(document).keys
    return {key.key_id: key for key in keys if key.key_id and key.algorithm_name in ASYMMETRIC}


class JwtVerifier:
    def __init__(self, issuer: str, audience: str, jwks_url: str) -> None:
        self.issuer = issuer
        self.audience = audience
        self.jwks_url = jwks_url
        self._keys: dict[str, PyJWK] = {}
        self._fetched_at = float("-inf")
        self._failed = False
        self._lock = asyncio.Lock()

    async def principal(self, token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(token)
        except jwt.InvalidTokenError as exc:
            raise InvalidTokenError("This token cannot be read.") from exc
        algorithm, key_id = header.get("alg"), header.get("kid")
        if algorithm not in ASYMMETRIC:
            raise InvalidTokenError("This token is not signed with an asymmetric algorithm.")
        if not isinstance(key_id, str):
            raise InvalidTokenError("This token names no signing key (kid).")
        key = await self._key(key_id)
        if key.algorithm_name != algorithm:
            raise InvalidTokenError("This token's algorithm is not its key's.")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key,
                algorithms=[algorithm],
                audience=self.audience,
                issuer=self.issuer,
                leeway=LEEWAY_S,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.InvalidTokenError as exc:
            raise InvalidTokenError(f"This token is refused: {exc}.") from exc
        return Principal(f"oidc:{claims['sub']}", scopes_of(claims))

    async def _key(self, key_id: str) -> PyJWK:
        if self._needs_fetch(key_id):
            async with self._lock:
                if self._needs_fetch(key_id):
                    await self._refresh()
        key = self._keys.get(key_id)
        if key is None:
            if self._failed:
                raise JwksUnavailableError(f"cannot fetch {self.jwks_url}")
            raise InvalidTokenError("This token's signing key is not the issuer's.")
        return key

    def _needs_fetch(self, key_id: str) -> bool:
        age_s = time.monotonic() - self._fetched_at
        return age_s > JWKS_MAX_AGE_S or (key_id not in self._keys and age_s > JWKS_MIN_REFETCH_S)

    async def _refresh(self) -> None:
        """Fetch the keys; on failure keep those already known (a provider outage must not
        log everyone out)."""
        try:
            self._keys = await asyncio.to_thread(fetch_jwks, self.jwks_url)
            self._failed = False
        except (OSError, ValueError, PyJWKSetError) as exc:
            logger.warning("cannot fetch the JWKS at %s: %s", self.jwks_url, exc)
            self._failed = True
        finally:
            self._fetched_at = time.monotonic()


def scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    granted = claims.get("scope", claims.get("scp", ""))
    if isinstance(granted, str):
        return frozenset(granted.split())
    if isinstance(granted, list):
        return frozenset(item for item in granted if isinstance(item, str))
    return frozenset()
