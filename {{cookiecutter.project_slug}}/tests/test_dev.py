import os
import re
import signal
{%- if cookiecutter.__examples == "yes" %}
import socket
{%- endif %}
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from {{ cookiecutter.__package_name }}.access import create_key
from {{ cookiecutter.__package_name }}.devtools.dev import SERVICE_DIR, how_to_authenticate
from {{ cookiecutter.__package_name }}.devtools.embedded_redis import free_port
{%- if cookiecutter.__examples == "yes" %}
from {{ cookiecutter.__package_name }}.devtools.mailbox import local_mailbox
{%- endif %}
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import bearer
from .test_embedded_redis import port_is_open

# Starts processes or waits out faults for seconds: `just test -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow
START_TIMEOUT_S = 30.0


def test_dev_serves_the_api_on_an_embedded_server_and_cleans_up(workdir: Path) -> None:
    """`just dev` without REDIS_URL starts a server, the API and both workers, prints how to
    call the API with the development key of .env, and SIGTERM (as Ctrl-C) stops them all."""
    key, entry = create_key("dev", ["operator"])
    port = free_port()
{%- if cookiecutter.__examples == "yes" %}
    smtp_port = free_port(avoid={port})
    (workdir / ".env").write_text(
        f"API_KEYS={entry.entry}\nDEV_API_KEY={key}\nSMTP_PORT={smtp_port}\n"
    )
{%- else %}
    (workdir / ".env").write_text(f"API_KEYS={entry.entry}\nDEV_API_KEY={key}\n")
{%- endif %}
    env = dev_environment()
    log = workdir / "dev.log"
    with log.open("wb") as out:
        dev = [sys.executable, "-m", "{{ cookiecutter.__package_name }}.devtools.dev"]
        process = subprocess.Popen(
            [*dev, "--port", str(port), "--no-reload"],
            cwd=workdir,
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
{%- if cookiecutter.__database == "postgres" %}
        assert ready["checks"] == {"redis": "ok", "database": "ok"}
{%- else %}
        assert ready["checks"] == {"redis": "ok"}
{%- endif %}
        assert set(ready["workers"].values()) == {"alive"}, log.read_text()
        match = re.search(r"redis://127\.0\.0\.1:(\d+)", log.read_text())
        assert match, log.read_text()
        redis_port = int(match.group(1))
        assert port_is_open(redis_port)
        assert f"Authorization: Bearer {key}" in log.read_text()
        body = {"name": "example_task", "args": {"message": "hi"}}
        submit = f"http://127.0.0.1:{port}/api/v1/tasks"
        assert httpx.post(submit, json=body).status_code == 401
        assert httpx.post(submit, json=body, headers=bearer(key)).status_code == 202
        # A second terminal finds the servers: `just shell` enqueues and reads a task there.
        services = (workdir / ".dev/services.env").read_text()
        assert f"REDIS_URL=redis://127.0.0.1:{redis_port}" in services
        assert f"API_URL=http://127.0.0.1:{port}" in services
        session = (
            "from {{ cookiecutter.__package_name }}.infrastructure import tasks\n"
            'task_id = await tasks.enqueue_task("example_task", message="shell", steps=2)\n'
            "job = (await tasks.get_task_pool()).job(task_id)\n"
            'print("RESULT", (await job.result(timeout_s=60))["message"], await job.status())\n'
        )
        shell = [sys.executable, "-m", "{{ cookiecutter.__package_name }}.devtools.shell"]
        answer = subprocess.run(
            shell, cwd=workdir, env=env, input=session, capture_output=True, text=True, timeout=120
        )
        assert "On the servers of `just dev`" in answer.stdout, answer.stdout + answer.stderr
        assert "RESULT shell complete" in answer.stdout, answer.stdout + answer.stderr
{%- if cookiecutter.__examples == "yes" %}
        assert f"Local mailbox on 127.0.0.1:{smtp_port}" in log.read_text()
{%- endif %}
{%- if cookiecutter.__database == "postgres" %}
        # The embedded database was migrated before the API started.
        user = {"email": "ada@example.com", "name": "Ada"}
        users = f"http://127.0.0.1:{port}/api/v1/users"
        assert httpx.post(users, json=user, headers=bearer(key)).status_code == 201
{%- if cookiecutter.__examples == "yes" %}
        # Its welcome e-mail reaches the local mailbox that `just dev` started.
        assert wait_for(lambda: "Subject: Welcome to" in log.read_text()), log.read_text()
{%- endif %}
{%- endif %}
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
    assert not port_is_open(redis_port)
    assert not port_is_open(port)
{%- if cookiecutter.__examples == "yes" %}
    assert not port_is_open(smtp_port)
{%- endif %}
    assert not (workdir / ".dev/services.env").exists()
{%- if cookiecutter.__database == "postgres" %}
    # The database stopped, its data kept for the next `just dev`.
    assert (workdir / ".dev/postgres/PG_VERSION").exists()
    assert not (workdir / ".dev/postgres/postmaster.pid").exists()
{%- endif %}


def test_dev_says_how_to_get_a_key_when_env_has_none() -> None:
    """A project updated from an older template keeps its .env, which has no development key."""
    key, entry = create_key("dev", ["operator"])
    without = Settings(_env_file=None)
    assert "just key dev --scope operator" in how_to_authenticate(without, None)
    assert "just key" in how_to_authenticate(without, key)  # a key the settings do not hold
    with_key = Settings(api_keys=entry.entry, _env_file=None)
    assert f"Bearer {key}" in how_to_authenticate(with_key, key)
    disabled = Settings(auth_disabled=True, _env_file=None)
    assert "AUTH_DISABLED" in how_to_authenticate(disabled, None)

{%- if cookiecutter.__examples == "yes" %}


def test_a_taken_smtp_port_leaves_the_mailbox_to_its_holder() -> None:
    """Two `just dev` started at once: the one that binds the port runs the mailbox; the
    other says where e-mail goes and goes on (a port bound but not yet listening, as the
    other one's is for an instant, is the narrowest case). The mailbox that runs is tested
    through `just dev` above."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        local = Settings(smtp_host="127.0.0.1", smtp_port=port, _env_file=None)
        with local_mailbox(local) as said:
            assert said == f"E-mail goes to the server already listening on 127.0.0.1:{port}."
{%- endif %}


def test_a_reload_says_one_line(workdir: Path) -> None:
    """A code change restarts the API and the workers, and all that `just dev` says of it is
    the file that changed: no start or stop line of each process, no traceback."""
    key, entry = create_key("dev", ["operator"])
    (workdir / ".env").write_text(f"API_KEYS={entry.entry}\n")
    port = free_port()
    env = dev_environment()
    log = workdir / "dev.log"
    probe = SERVICE_DIR / "reload_probe.py"
    api = f"http://127.0.0.1:{port}"
    with log.open("wb") as out:
        dev = [sys.executable, "-m", "{{ cookiecutter.__package_name }}.devtools.dev"]
        process = subprocess.Popen(
            [*dev, "--port", str(port)], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        assert wait_for(lambda: answers(f"{api}/health/live")), log.read_text()
        said = len(log.read_text().splitlines())
        probe.write_text('"""Written by tests/test_dev.py to set off a reload."""\n')
        assert wait_for(lambda: "Reloading" in log.read_text()), log.read_text()
        # The reload stopped the old workers at once: only a new one runs this task, and the
        # API that answers its status at the end is the new one (each has logged its start).
        body = {"name": "example_task", "args": {"message": "after the reload"}}
        submitted: list[str] = []
        tasks_url = f"{api}/api/v1/tasks"
        assert wait_for(lambda: submit(tasks_url, body, key, submitted)), log.read_text()
        assert wait_for(lambda: status(api + submitted[0], key) == "complete"), log.read_text()
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        probe.unlink(missing_ok=True)
    new = log.read_text().splitlines()[said:]
    assert [line for line in new if "Reloading" in line] == [
        f"WARNING:  WatchFiles detected changes in '{probe}'. Reloading..."
    ], "\n".join(new)
    lifecycle = ("Traceback", "Started server", "Starting worker", "Shutting down", "shutdown on")
    assert not [line for line in new if any(word in line for word in lifecycle)], "\n".join(new)


def dev_environment() -> dict[str, str]:
    """This process's environment without the servers' addresses: `just dev` starts its own."""
{%- if cookiecutter.__database == "postgres" %}
    started = {"REDIS_URL", "DATABASE_URL"}
{%- else %}
    started = {"REDIS_URL"}
{%- endif %}
    return {key: value for key, value in os.environ.items() if key not in started}


def answers(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.TransportError:
        return False


def submit(url: str, body: dict[str, Any], key: str, submitted: list[str]) -> bool:
    """Submit `body`, adding its status URL to `submitted`; False while the API restarts."""
    try:
        reply = httpx.post(url, json=body, headers=bearer(key), timeout=5)
    except httpx.TransportError:
        return False
    if reply.status_code == 202:
        submitted.append(reply.headers["Location"])
    return reply.status_code == 202


def status(url: str, key: str) -> str | None:
    try:
        return str(httpx.get(url, headers=bearer(key), timeout=5).json()["status"])
    except httpx.TransportError:
        return None


def wait_for(condition: Callable[[], bool]) -> bool:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.2)
    return False
