"""Who may do what: principals and their scopes, API keys, and the signed tokens that let a
browser follow one task.

API keys are random and shown once; the service keeps only their SHA-256 (a key has 256 bits of
entropy, so a fast hash is as safe as a slow one and costs a microsecond per request). An entry
of the API_KEYS setting reads `NAME:SCOPE+SCOPE:SHA256`, e.g.
`mobile-app:tasks:submit+tasks:read:4f0c...`.
"""

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from functools import cached_property

SUBMIT = "tasks:submit"
READ = "tasks:read"
CANCEL = "tasks:cancel"
OPERATOR = "operator"
SCOPES = (SUBMIT, READ, CANCEL, OPERATOR)
SUBMIT_ONE_PREFIX = SUBMIT + ":"  # tasks:submit:<task name>, sensitive tasks included
KEY_PREFIX = "key_"
KEY_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
TASK_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
SHA256_HEX = re.compile(r"[0-9a-f]{64}")
# Owned task ids are "<tag>.<id>": the tag is the submitter's, so ids cannot collide across
# principals, and whose task an id is can be told without a lookup.
TAG_LENGTH = 16


def scope_error(scope: str) -> str | None:
    """Why `scope` is not one, or None when it is."""
    if scope in SCOPES:
        return None
    if scope.startswith(SUBMIT_ONE_PREFIX) and TASK_NAME.fullmatch(
        scope.removeprefix(SUBMIT_ONE_PREFIX)
    ):
        return None
    return f"{scope!r} is not a scope: use {', '.join(SCOPES)} or {SUBMIT_ONE_PREFIX}<task name>"


@dataclass(frozen=True)
class Principal:
    """Whoever a request acts for: an API key's name or a token's subject, with its scopes."""

    name: str
    scopes: frozenset[str]

    @property
    def is_operator(self) -> bool:
        return OPERATOR in self.scopes

    def can(self, scope: str) -> bool:
        return self.is_operator or scope in self.scopes

    def can_submit(self, task: str, *, sensitive: bool) -> bool:
        """Submit `task`: with its own scope, or with tasks:submit unless it is sensitive."""
        return self.can(SUBMIT_ONE_PREFIX + task) or (not sensitive and SUBMIT in self.scopes)

    def can_submit_any(self) -> bool:
        return self.is_operator or any(scope.startswith(SUBMIT) for scope in self.scopes)

    @cached_property
    def tag(self) -> str:
        return hashlib.sha256(self.name.encode()).hexdigest()[:TAG_LENGTH]

    def owns(self, task_id: str) -> bool:
        return task_id.startswith(self.tag + ".")

    def can_see(self, task_id: str) -> bool:
        """Its own tasks; an operator's, every task."""
        return self.is_operator or self.owns(task_id)

    def task_id(self, chosen: str | None) -> str:
        """The id of a task it submits: its tag, then the id it chose or a random one."""
        return f"{self.tag}.{chosen or secrets.token_hex(16)}"


@dataclass(frozen=True)
class ApiKey:
    name: str
    scopes: frozenset[str]
    sha256: str

    @property
    def principal(self) -> Principal:
        return Principal(f"key:{self.name}", self.scopes)

    @property
    def entry(self) -> str:
        return f"{self.name}:{'+'.join(sorted(self.scopes))}:{self.sha256}"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def create_key(name: str, scopes: list[str]) -> tuple[str, ApiKey]:
    """A new random key and its API_KEYS entry; ValueError for a bad name or scope."""
    if not KEY_NAME.fullmatch(name):
        raise ValueError(
            f"{name!r} is not a key name: 1-64 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    if not scopes:
        raise ValueError("give the key at least one scope")
    for scope in scopes:
        if error := scope_error(scope):
            raise ValueError(error)
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    return key, ApiKey(name, frozenset(scopes), hash_key(key))


def parse_key_entry(entry: str) -> ApiKey:
    """An API_KEYS entry, `NAME:SCOPE+SCOPE:SHA256`; ValueError saying what is wrong."""
    name, _, rest = entry.partition(":")
    scopes, _, digest = rest.rpartition(":")
    if not KEY_NAME.fullmatch(name) or not scopes or not SHA256_HEX.fullmatch(digest):
        raise ValueError(
            f"API_KEYS entry {entry[:24]!r}... is not NAME:SCOPE+SCOPE:SHA256; "
            "make entries with the keys command"
        )
    for scope in scopes.split("+"):
        if error := scope_error(scope):
            raise ValueError(f"API_KEYS entry {name!r}: {error}")
    return ApiKey(name, frozenset(scopes.split("+")), digest)


class FollowTokens:
    """Tokens allowing to follow one task's events, and only those, for `ttl_s` seconds:
    `<expiry>.<HMAC-SHA256 of the task id and the expiry>`."""

    def __init__(self, secret: bytes, ttl_s: float) -> None:
        self._secret = secret
        self._ttl_s = ttl_s

    def sign(self, task_id: str) -> str:
        expires = int(time.time() + self._ttl_s)
        return f"{expires}.{_follow_mac(self._secret, task_id, expires)}"

    def allows(self, token: str, task_id: str) -> bool:
        expires, _, mac = token.partition(".")
        # ASCII first: "¹" is a digit to str.isdigit, not to int(), and compare_digest
        # refuses non-ASCII strings.
        if not (expires.isascii() and expires.isdigit() and mac.isascii()):
            return False
        if int(expires) < time.time():
            return False
        return hmac.compare_digest(mac, _follow_mac(self._secret, task_id, int(expires)))


def _follow_mac(secret: bytes, task_id: str, expires: int) -> str:
    digest = hmac.digest(secret, f"follow\n{task_id}\n{expires}".encode(), "sha256")
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
