"""Every request gets an id: the caller's `X-Request-ID` when it is a sane one, else a new
one. It is on every log line of the request{% if cookiecutter.cache_backend != "none" %} (and of the tasks it enqueues){% endif %}, and sent back in the
response's `X-Request-ID`."""

import re
from uuid import uuid4

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..logs import REQUEST_ID

HEADER = b"x-request-id"
# What a proxy or client may choose: short, and nothing that could forge a log line.
ACCEPTED = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


class RequestId:
    """Pure ASGI middleware: no body buffering, no extra task per request."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        given = next((value for name, value in scope["headers"] if name == HEADER), b"")
        request_id = given.decode() if ACCEPTED.fullmatch(given) else uuid4().hex

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (HEADER, request_id.encode())]
            await send(message)

        token = REQUEST_ID.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
