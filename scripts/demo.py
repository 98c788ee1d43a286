"""Render the default service, start it on an embedded server and show it answering.

Run through `python3 scripts/just.py demo`. The project lands in build/demo/ (replaced on every
run); `--keep` leaves the service running until Ctrl-C so that you can try it.
"""

from __future__ import annotations

import argparse
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


def get_json(url: str) -> tuple[int, object]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def wait_until_ready(url: str, service: subprocess.Popen[bytes]) -> tuple[int, object]:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise SystemExit(f"The service exited with code {service.returncode}.")
        try:
            return get_json(url)
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.3)
    raise SystemExit(f"The service did not answer {url} within {START_TIMEOUT_S:.0f} s.")


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
    step(f"Starting `just dev`: embedded Redis and the API on port {port}")
    service = subprocess.Popen(
        ["just", "dev", "--port", str(port), "--no-reload"],
        cwd=project,
        env=env,
        start_new_session=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/health/ready"
        status, body = wait_until_ready(url, service)
        step(f"GET {url} -> {status}")
        print(json.dumps(body, indent=2), flush=True)
        if status != 200:
            return 1
        if args.keep:
            step(f"Running: http://127.0.0.1:{port}/docs  (Ctrl-C stops it)")
            service.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        if service.poll() is None:
            os.killpg(service.pid, signal.SIGTERM)
            service.wait(timeout=30)
        step("Stopped the API and the embedded server")


if __name__ == "__main__":
    sys.exit(main())
