"""Bearer JWTs of an identity provider, checked against keys published by a JWKS server that
the test starts on 127.0.0.1, with keys it makes."""

import hmac
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from {{ cookiecutter.__package_name }}.api.console_session import (
    SESSION_COOKIE,
    SESSION_PREFIX,
)
from {{ cookiecutter.__package_name }}.devtools.embedded_redis import free_port
from {{ cookiecutter.__package_name }}.infrastructure import oidc
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import serve
from .test_console import cookie, sign_in

ISSUER = "https://id.example.test/"
AUDIENCE = "{{ cookiecutter.project_slug }}"
TASKS = "/api/v1/tasks"
SUBMISSION = {"name": "example_task", "args": {"message": "from a token"}}


class Jwks:
    """Signing keys, as an identity provider holds them, and the JWKS document it publishes."""

    def __init__(self) -> None:
        self.rsa = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ec = ec.generate_private_key(ec.SECP256R1())
        self.published: dict[str, Any] = {"keys": [self.jwk("rsa-1"), self.jwk("ec-1")]}
        self.fetches = 0

    def jwk(self, kid: str) -> dict[str, Any]:
        if kid.startswith("rsa"):
            document = RSAAlgorithm.to_jwk(self.rsa.public_key(), as_dict=True)
            return {**document, "kid": kid, "alg": "RS256", "use": "sig"}
        document = ECAlgorithm.to_jwk(self.ec.public_key(), as_dict=True)
        return {**document, "kid": kid, "alg": "ES256", "use": "sig"}

    def token(self, kid: str = "rsa-1", **overrides: Any) -> str:
        now = int(time.time())
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": "user-1",
            "iat": now,
            "exp": now + 300,
            "scope": "tasks:submit tasks:read",
            **overrides,
        }
        claims = {name: value for name, value in claims.items() if value is not None}
        if kid.startswith("ec"):
            return jwt.encode(claims, self.ec, algorithm="ES256", headers={"kid": kid})
        return jwt.encode(claims, self.rsa, algorithm="RS256", headers={"kid": kid})


@pytest.fixture
def jwks() -> Iterator[tuple[Jwks, str]]:
    """The JWKS server, on a free port of 127.0.0.1; yields the keys and the JWKS URL."""
    keys = Jwks()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            keys.fetches += 1
            body = json.dumps(keys.published).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield keys, f"http://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    server.shutdown()
    server.server_close()


@pytest.fixture
async def api(
    settings: Settings, jwks: tuple[Jwks, str]
) -> AsyncIterator[tuple[httpx.AsyncClient, Jwks]]:
    keys, url = jwks
    update = {"auth_jwt_issuer": ISSUER, "auth_jwt_audience": AUDIENCE, "auth_jwks_url": url}
    async with serve(create_app(settings.model_copy(update=update)), key=None) as client:
        yield client, keys


def with_token(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_a_valid_token_acts_for_its_subject_with_its_scopes(
    api: tuple[httpx.AsyncClient, Jwks],
) -> None:
    client, keys = api
    accepted = await client.post(TASKS, json=SUBMISSION, headers=with_token(keys.token()))
    assert accepted.status_code == 202, accepted.text
    status_url = accepted.json()["status_url"]
    for token in (keys.token("ec-1"), keys.token(scope=None, scp=["tasks:read"])):
        assert (await client.get(status_url, headers=with_token(token))).status_code == 200
    other_user = keys.token(sub="user-2")
    assert (await client.get(status_url, headers=with_token(other_user))).status_code == 404
    cancel = await client.delete(status_url, headers=with_token(keys.token()))
    assert cancel.status_code == 403  # no tasks:cancel in its scope
    assert keys.fetches == 1  # fetched once, then kept


def hand_made(algorithm: str, sign: Any) -> str:
    """A token built by hand with operator scope: what an attacker would send."""
    now = int(time.time())
    claims = {"iss": ISSUER, "aud": AUDIENCE, "sub": "x", "exp": now + 300, "scope": "operator"}
    header = {"alg": algorithm, "typ": "JWT", "kid": "rsa-1"}
    encoded = [jwt.utils.base64url_encode(json.dumps(part).encode()) for part in (header, claims)]
    signing_input = b".".join(encoded)
    return (signing_input + b"." + jwt.utils.base64url_encode(sign(signing_input))).decode()


def unsigned(keys: Jwks) -> str:
    return hand_made("none", lambda _: b"")


def hs256_with_the_public_key(keys: Jwks) -> str:
    """The classic confusion attack: an HMAC token whose secret is the RSA public key."""
    public = keys.rsa.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hand_made("HS256", lambda signing_input: hmac.digest(public, signing_input, "sha256"))


@pytest.mark.parametrize(
    ("make", "why"),
    [
        (lambda keys: keys.token(exp=int(time.time()) - 120), "expired"),
        (lambda keys: keys.token(aud="another-service"), "audience"),
        (lambda keys: keys.token(iss="https://elsewhere.test/"), "issuer"),
        (lambda keys: keys.token(nbf=int(time.time()) + 600), "not yet valid"),
        (lambda keys: keys.token(sub=None), "sub"),
        (lambda keys: keys.token(kid="rsa-unknown"), "signing key is not the issuer's"),
        (unsigned, "asymmetric"),
        (hs256_with_the_public_key, "asymmetric"),
        (lambda keys: keys.token()[:-4] + "AAAA", "Signature verification failed"),
    ],
    ids=[
        "expired",
        "audience",
        "issuer",
        "nbf",
        "no-sub",
        "unknown-kid",
        "alg-none",
        "hs256",
        "bad-signature",
    ],
)
async def test_tokens_that_must_not_pass_get_401(
    api: tuple[httpx.AsyncClient, Jwks], make: Any, why: str
) -> None:
    client, keys = api
    reply = await client.post(TASKS, json=SUBMISSION, headers=with_token(make(keys)))
    assert reply.status_code == 401, reply.text
    assert reply.headers["WWW-Authenticate"] == "Bearer"
    assert why.lower() in reply.json()["detail"].lower()


async def test_a_rotated_key_is_fetched_and_made_up_key_ids_do_not_refetch(
    api: tuple[httpx.AsyncClient, Jwks], monkeypatch: pytest.MonkeyPatch
) -> None:
    client, keys = api
    monkeypatch.setattr(oidc, "JWKS_MIN_REFETCH_S", 0.0)  # as if the last fetch were long ago

    async def submit(token: str) -> int:
        reply = await client.post(TASKS, json=SUBMISSION, headers=with_token(token))
        return reply.status_code

    assert await submit(keys.token()) == 202
    keys.published["keys"].append({**keys.jwk("rsa-1"), "kid": "rsa-2"})  # the provider rotates
    assert await submit(keys.token(kid="rsa-2")) == 202
    assert keys.fetches == 2
    monkeypatch.setattr(oidc, "JWKS_MIN_REFETCH_S", 30.0)
    for attempt in range(5):
        assert await submit(keys.token(kid=f"made-up-{attempt}")) == 401
    assert keys.fetches == 2  # within JWKS_MIN_REFETCH_S of the last fetch: none


async def test_an_unreachable_jwks_gives_503_with_retry_after(settings: Settings) -> None:
    update = {
        "auth_jwt_issuer": ISSUER,
        "auth_jwt_audience": AUDIENCE,
        "auth_jwks_url": f"http://127.0.0.1:{free_port()}/jwks.json",
    }
    async with serve(create_app(settings.model_copy(update=update)), key=None) as client:
        reply = await client.post(TASKS, json=SUBMISSION, headers=with_token(Jwks().token()))
    assert reply.status_code == 503
    assert int(reply.headers["Retry-After"]) > 0
    assert "identity provider" in reply.json()["detail"]


def test_jwt_settings_come_together() -> None:
    with pytest.raises(ValueError, match="AUTH_JWT_AUDIENCE, AUTH_JWKS_URL must be set too"):
        Settings(auth_jwt_issuer=ISSUER, _env_file=None)


async def test_an_operator_token_signs_in_to_the_console_until_it_expires(
    api: tuple[httpx.AsyncClient, Jwks], task_queue: TaskQueue
) -> None:
    client, keys = api
    reader = await sign_in(client, keys.token())
    assert "does not have the operator scope" in reader.text
    expires = int(time.time()) + 120
    operator = await sign_in(client, keys.token(sub="ops-1", scope="operator", exp=expires))
    assert operator.status_code == 303
    session = cookie(SESSION_COOKIE, operator.cookies[SESSION_COOKIE])
    assert (await client.get("/console", headers=session)).status_code == 200
    [stored] = await task_queue.pool.keys(f"{SESSION_PREFIX}*")
    assert 100 < await task_queue.pool.ttl(stored) <= 120  # the token's, not the 8-hour default
