"""JSON for task arguments and results, instead of arq's default pickle: a poisoned or shared
Redis cannot make a worker run code."""

import asyncio
import json
from typing import Any


class TaskError(Exception):
    """A task's failure as stored with its result: the exception's type name and message."""


def serialize(value: Any) -> bytes:
    return json.dumps(value, default=_encode, separators=(",", ":")).encode()


def deserialize(data: bytes | str) -> Any:
    return json.loads(data, object_hook=_decode)


def _encode(value: object) -> object:
    if isinstance(value, BaseException):
        return {"__error__": type(value).__name__, "message": str(value)}
    raise TypeError(
        f"{type(value).__name__} is not a JSON value: task arguments and results must be "
        "dicts, lists, strings, numbers, booleans or None"
    )


def _decode(obj: dict[str, Any]) -> object:
    if set(obj) == {"__error__", "message"}:
        if obj["__error__"] == "CancelledError":
            return asyncio.CancelledError(obj["message"])
        name, message = obj["__error__"], obj["message"]
        return TaskError(f"{name}: {message}" if message else name)
    return obj
