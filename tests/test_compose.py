"""The rendered compose stack, run for real on a Docker engine: `docker build` of the rendered
Dockerfile, then `docker compose up` of the rendered docker-compose.yml with the project's .env.

It checks what a team relies on when it runs the stack on one host: readiness with both queues'
workers, a task and a media upload processed, `--scale worker=3`, a worker container killed with
SIGKILL in the middle of a task (another worker completes it within 30 s), the cache's
append-only file keeping the data through a SIGKILL of the cache container, and `stop` within
the grace period with no container needing SIGKILL.

The engine is the one DOCKER_HOST names (`.ci/run` starts its own). With
TEMPLATE_DOCKER_IMAGES=standins, as `.ci/run` sets it where no registry is reachable, the base
images are stand-ins built here first (tests/standins.py) and the test ids say so; otherwise
Docker pulls the real ones (GitHub Actions).
"""

from __future__ import annotations

import os
import shutil
import struct
import subprocess
import time
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import standins
from conftest import COMBOS, Combo, dev_api_key, free_port, run, tool, tool_env

STANDINS = os.environ.get("TEMPLATE_DOCKER_IMAGES") == "standins"
WAIT_S = 60.0  # an upper bound for a loaded machine, not a timing claim
RECOVERY_S = 30.0  # what the issue promises for a task whose worker was killed
GRACE_S = 40.0  # stop_grace_period of the workers in the rendered compose file


def runs_the_stack(combo: Combo) -> bool:
    """Python 3.11 (the stand-in Python is Debian's 3.11) with the task layer and the examples
    (the upload), on both brokers, with and without the database; `ci` does not change it."""
    return (
        combo.python_version == "3.11"
        and combo.has_tasks
        and combo.example_tasks == "yes"
        and combo.ci == "github"
    )


# One xdist worker runs them one after the other (the stacks share the image's name; a lock
# makes sure of it).
STACKS = [
    pytest.param(
        combo,
        id=combo.id + ("-stand_in_images" if STANDINS else "-registry_images"),
        marks=pytest.mark.xdist_group("compose-stack"),
    )
    for combo in COMBOS
    if runs_the_stack(combo)
]


class Stack:
    """`docker compose` of one rendered project, under its own compose project name."""

    def __init__(self, project: Path, name: str) -> None:
        self.project = project
        self.name = name
        self.port = free_port()
        self.env = {**tool_env(), "API_PORT": str(self.port)}
        self.key = dev_api_key(project)
        self.http = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=10,
        )

    def compose(self, *args: str) -> str:
        command = [tool("docker-compose"), "--project-name", self.name, *args]
        return run(command, self.project, self.env)

    def containers(self, service: str) -> list[str]:
        return self.compose("ps", "--quiet", service).split()

    def ready(self) -> dict[str, Any]:
        """/health/ready once it answers 200 with both queues' workers alive: the API can be
        ready a moment before the second worker's first heartbeat."""
        deadline = time.monotonic() + WAIT_S
        last: object = None
        while time.monotonic() < deadline:
            try:
                response = self.http.get("/health/ready")
                last = response.text
                if response.status_code == 200:
                    body: dict[str, Any] = response.json()
                    if set(body["workers"].values()) == {"alive"}:
                        return body
            except httpx.TransportError as exc:
                last = exc
            time.sleep(0.5)
        pytest.fail(f"not ready in {WAIT_S:g} s: {last}\n{self.compose('logs', '--tail', '30')}")

    def until_passes(self, command: list[str]) -> None:
        deadline = time.monotonic() + WAIT_S
        while True:
            done = subprocess.run(command, env=self.env, capture_output=True, text=True)
            if done.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert done.returncode == 0, f"{' '.join(command)}: {done.stdout}{done.stderr}"

    def submit(self, **args: Any) -> str:
        response = self.http.post("/api/v1/tasks", json={"name": "example_task", "args": args})
        assert response.status_code == 202, response.text
        task_id: str = response.json()["task_id"]
        return task_id

    def status(self, task_id: str) -> dict[str, Any]:
        response = self.http.get(f"/api/v1/tasks/{task_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait_for(self, task_id: str, wanted: str, within_s: float = WAIT_S) -> dict[str, Any]:
        deadline = time.monotonic() + within_s
        state = self.status(task_id)
        while state["status"] != wanted and time.monotonic() < deadline:
            time.sleep(0.25)
            state = self.status(task_id)
        assert state["status"] == wanted, (state, self.compose("logs", "--tail", "40"))
        return state


def png(width: int, height: int) -> bytes:
    """A small RGB PNG, made with the standard library."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\0" + bytes(value for x in range(width) for value in (x % 256, y % 256, 128))
        for y in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


@pytest.fixture
def stack(combo: Combo, bake: Callable[[Combo], Path], tmp_path: Path) -> Iterator[Stack]:
    """The rendered project, its lock file and image built, under a compose project name of its
    own; everything it started is removed afterwards, volumes included."""
    project = tmp_path / "project"
    shutil.copytree(bake(combo), project, ignore=shutil.ignore_patterns(".venv"))
    docker = tool("docker")
    version = subprocess.run([docker, "version"], env=tool_env(), capture_output=True, text=True)
    assert version.returncode == 0, (
        "No Docker engine answers (DOCKER_HOST): `.ci/run` starts one.\n" + version.stderr
    )
    run([tool("uv"), "lock", "--quiet"], project)
    if STANDINS:
        standins.build(project)
    build_env = standins.docker_env() if STANDINS else tool_env()
    image = f"{combo.package.replace('_', '-')}:latest"
    with standins.lock("compose-stack"):
        run([docker, "build", "--network", "host", "-t", image, "."], project, build_env)
        running = Stack(project, f"stack-{combo.cache_backend}-{os.getpid()}")
        try:
            yield running
        finally:
            running.http.close()
            running.compose("down", "--volumes", "--timeout", "5")


@pytest.mark.parametrize("combo", STACKS)
def test_the_compose_stack_runs_tasks_and_survives_killed_containers(
    combo: Combo, stack: Stack
) -> None:
    stack.compose("up", "--detach", "--no-build")
    ready = stack.ready()
    assert list(ready["workers"].values()) == ["alive", "alive"], ready

    # A task and a media upload, each through to its result.
    task_id = stack.submit(message="in compose")
    assert stack.wait_for(task_id, "complete")["result"]["message"] == "in compose"
    upload = stack.http.post("/api/v1/media", files={"file": ("photo.png", png(640, 480))})
    assert upload.status_code == 202, upload.text
    # The API stored it on the shared volume, a worker read it there.
    media = stack.wait_for(upload.json()["task_id"], "complete")
    thumbnail = media["result"]["thumbnail"]
    assert (thumbnail["width"], thumbnail["height"]) == (300, 225), media

    # Three workers on the default queue, each its own container whose own worker beats: the
    # check its health check (and the Kubernetes liveness probe) runs passes in each.
    scaled = stack.compose("up", "--detach", "--no-build", "--scale", "worker=3")
    workers = stack.containers("worker")
    assert len(workers) == 3, (workers, scaled)
    check_self = ["python", "-m", f"{combo.package}.worker", "--check-self"]
    for worker in workers:
        stack.until_passes([tool("docker"), "exec", worker, *check_self])

    # SIGKILL of the container running a task: its lease runs out, another worker completes it.
    long_id = stack.submit(message="outlives its worker", steps=4, delay_s=2)
    stack.wait_for(long_id, "in_progress")
    [victim] = [
        c for c in workers if long_id in run([tool("docker"), "logs", c], stack.project, stack.env)
    ]
    killed_at = time.monotonic()
    run([tool("docker"), "kill", "--signal", "KILL", victim], stack.project, stack.env)
    done = stack.wait_for(long_id, "complete", within_s=RECOVERY_S)
    assert time.monotonic() - killed_at < RECOVERY_S
    assert done["tries"] == 2, done

    # The cache's append-only file: a SIGKILL (no save on shutdown) loses no finished task.
    time.sleep(1.5)  # appendfsync everysec
    stack.compose("kill", "--signal", "KILL", "cache")
    stack.compose("start", "cache")
    stack.ready()
    assert stack.status(task_id)["status"] == "complete"
    assert stack.status(long_id)["status"] == "complete"

    # Stop: every container exits on SIGTERM within the grace period, none is killed.
    running = stack.compose("ps", "--quiet").split()
    assert len(running) == 5 + combo.has_database, running  # the killed worker is not among them
    started = time.monotonic()
    stack.compose("stop")
    assert time.monotonic() - started < GRACE_S
    for container in running:
        state = run(
            [tool("docker"), "inspect", "--format", "{{.Name}} {{.State.ExitCode}}", container],
            stack.project,
            stack.env,
        )
        assert not state.strip().endswith(" 137"), state
