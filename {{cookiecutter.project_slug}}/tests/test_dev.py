import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from {{ cookiecutter.__package_name }}.devtools.embedded_redis import free_port

from .test_embedded_redis import port_is_open

START_TIMEOUT_S = 30.0


def test_dev_serves_the_api_on_an_embedded_server_and_cleans_up(tmp_path: Path) -> None:
    """`just dev` without REDIS_URL starts a server, the API and both workers, and SIGTERM
    (as Ctrl-C) stops them all."""
    port = free_port()
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    log = tmp_path / "dev.log"
    with log.open("wb") as out:
        dev = [sys.executable, "-m", "{{ cookiecutter.__package_name }}.devtools.dev"]
        process = subprocess.Popen(
            [*dev, "--port", str(port), "--no-reload"],
            cwd=tmp_path,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        ready: dict[str, Any] = {}
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=1).json()
            except httpx.TransportError:
                ready = {}
            if ready and set(ready["workers"].values()) == {"alive"}:
                break
            time.sleep(0.2)
        assert ready, log.read_text()
        assert ready["checks"] == {"redis": "ok"}
        assert set(ready["workers"].values()) == {"alive"}, log.read_text()
        match = re.search(r"redis://127\.0\.0\.1:(\d+)", log.read_text())
        assert match, log.read_text()
        redis_port = int(match.group(1))
        assert port_is_open(redis_port)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert not port_is_open(redis_port)
    assert not port_is_open(port)
