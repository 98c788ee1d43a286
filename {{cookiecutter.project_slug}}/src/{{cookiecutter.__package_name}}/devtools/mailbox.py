"""`just dev`'s local mailbox for the e-mail example: an SMTP server that prints every message
it receives, started when SMTP_HOST is this machine and nothing listens on SMTP_PORT yet (as
with the settings' default, localhost:1025). `just mailbox` runs the same server alone."""

import contextlib
import socket
import sys

from ..settings import Settings

LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1"})


def listening(host: str, port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=1):
        return True
    return False


def mailbox_command(settings: Settings) -> tuple[list[str] | None, str]:
    """The command that starts the mailbox (None when e-mail goes elsewhere) and what to say."""
    address = f"{settings.smtp_host}:{settings.smtp_port}"
    if settings.smtp_host not in LOCAL_HOSTS:
        return None, f"E-mail goes to SMTP_HOST {address}."
    if listening(settings.smtp_host, settings.smtp_port):
        return None, f"E-mail goes to the server already listening on {address}."
    listen = f"127.0.0.1:{settings.smtp_port}"
    command = [sys.executable, "-m", "aiosmtpd", "--nosetuid", "--listen", listen]
    return command, f"Local mailbox on {listen}: every e-mail sent is printed here."
