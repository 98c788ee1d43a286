"""`just dev`'s local mailbox for the e-mail example: an SMTP server, in `just dev`'s own
process, that prints every message it receives. It runs when SMTP_HOST is this machine and
SMTP_PORT is free (as with the settings' default, localhost:1025); binding the port is the
test, so two `just dev` started at once cannot both take it. `just mailbox` runs the same
server alone."""

import contextlib
import socket
import sys
from collections.abc import Iterator

from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Debugging

from ..settings import Settings

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})


def listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


@contextlib.contextmanager
def local_mailbox(settings: Settings) -> Iterator[str]:
    """The mailbox, while the block runs, if e-mail goes to a free port of this machine;
    yields where e-mail goes, for `just dev` to say."""
    address = f"{settings.smtp_host}:{settings.smtp_port}"
    if settings.smtp_host not in LOCAL_HOSTS:
        yield f"E-mail goes to SMTP_HOST {address}."
        return
    taken = f"E-mail goes to the server already listening on {address}."
    if listening(settings.smtp_host, settings.smtp_port):
        yield taken
        return
    # Each message printed whole at once, also into a pipe or a file (`just dev | tee`).
    with open(sys.stdout.fileno(), "w", buffering=1, closefd=False) as stream:
        mailbox = Controller(Debugging(stream), hostname="127.0.0.1", port=settings.smtp_port)
        listen = f"127.0.0.1:{settings.smtp_port}"
        try:
            mailbox.start()
        except OSError:  # another process bound it since
            mailbox.loop.close()
            yield taken
            return
        try:
            yield f"Local mailbox on {listen}: every e-mail sent is printed here."
        finally:
            mailbox.stop()
