"""Render the default service, start it on an embedded server, run a task through it.

Run through `python3 scripts/just.py demo`. The project lands in build/demo/ (replaced on every
run); `--keep` leaves the service running until Ctrl-C so that you can try it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from cookiecutter.main import cookiecutter

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "build" / "demo"
START_TIMEOUT_S = 120.0


def step(message: str) -> None:
    print(f"==> {message}", flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def call(
    url: str, body: object = None, key: str | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """GET, or POST `body` as JSON, with API key `key` when given; returns the status, the JSON
    answer and the headers."""
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    request = urllib.request.Request(url, data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=2) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error), dict(error.headers)


def wait_until_ready(url: str, service: subprocess.Popen[bytes]) -> dict[str, Any]:
    """Poll readiness until the API is ready and its workers send heartbeats."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise SystemExit(f"The service exited with code {service.returncode}.")
        try:
            status, body, _ = call(url)
        except (urllib.error.URLError, ConnectionError):
            status, body = 0, {}
        if status == 200 and set(body.get("workers", {}).values()) == {"alive"}:
            return body
        time.sleep(0.3)
    raise SystemExit(f"The service was not ready at {url} within {START_TIMEOUT_S:.0f} s.")


def follow(url: str, key: str) -> dict[str, Any]:
    """Poll a task's status URL, printing each change, until it finishes."""
    last = None
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        _, state, _ = call(url, key=key)
        if (state["status"], state["progress"]) != last:
            last = (state["status"], state["progress"])
            print(f"    status={state['status']} progress={state['progress']}", flush=True)
        if state["status"] in {"complete", "failed", "aborted"}:
            return state
        time.sleep(0.1)
    raise SystemExit(f"The task did not finish within {START_TIMEOUT_S:.0f} s.")


def dev_key(project: Path) -> str:
    """The development API key the template wrote to the project's .env."""
    for line in (project / ".env").read_text().splitlines():
        name, _, value = line.partition("=")
        if name == "DEV_API_KEY" and value:
            return value
    raise SystemExit("The rendered .env has no DEV_API_KEY.")


def stop_group(service: subprocess.Popen[bytes]) -> None:
    """SIGTERM the service's process group, then wait until every member has exited."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(service.pid, signal.SIGTERM)
    service.wait(timeout=30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.killpg(service.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--keep", action="store_true", help="keep the service running")
    args = parser.parse_args()

    step(f"Rendering the default answers into {OUTPUT.relative_to(ROOT)}/")
    shutil.rmtree(OUTPUT, ignore_errors=True)
    project = Path(cookiecutter(str(ROOT), no_input=True, output_dir=str(OUTPUT)))
    env = {
        key: value for key, value in os.environ.items() if key not in {"VIRTUAL_ENV", "REDIS_URL"}
    }
    env["UV_PYTHON_DOWNLOADS"] = "never"

    step("Installing its dependencies with uv (uv sync)")
    subprocess.run(["uv", "sync", "--quiet"], cwd=project, env=env, check=True)

    port = free_port()
    step(f"Starting `just dev`: embedded Redis, the API on port {port}, the workers")
    service = subprocess.Popen(
        ["just", "dev", "--port", str(port), "--no-reload"],
        cwd=project,
        env=env,
        start_new_session=True,
    )
    try:
        base = f"http://127.0.0.1:{port}"
        ready = wait_until_ready(f"{base}/health/ready", service)
        step(f"GET /health/ready -> 200 {json.dumps(ready)}")
        task = {"name": "example_task", "args": {"message": "hello", "steps": 5, "delay_s": 0.2}}
        key = dev_key(project)
        status, accepted, headers = call(f"{base}/api/v1/tasks", task, key)
        step(f"POST /api/v1/tasks {json.dumps(task)} -> {status} Location: {headers['location']}")
        print(f"    {json.dumps(accepted)}", flush=True)
        step(f"Following GET {headers['location']}")
        final = follow(base + headers["location"], key)
        print(json.dumps(final, indent=2), flush=True)
        if final["status"] != "complete":
            return 1
        step(f"The operator console shows it: {base}/console (sign in with the key above)")
        if args.keep:
            step(f"Running: {base}/docs and {base}/console  (Ctrl-C stops it)")
            service.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        stop_group(service)
        step("Stopped the API, the workers and the embedded server")


if __name__ == "__main__":
    sys.exit(main())
