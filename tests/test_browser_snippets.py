"""The browser snippets of a rendered docs/background-tasks.md work as written.

They run in Node.js, whose WebSocket, EventSource and fetch follow the browsers' (Node 20 needs
the two --experimental flags, later versions accept them), against the rendered service started
with its own `just dev`: an embedded server, the API and the workers.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import (
    Combo,
    combo_params,
    dev_api_key,
    find_python,
    free_port,
    run,
    tool,
    tool_env,
)

JS_BLOCK = re.compile(r"```js\n(.*?)```", re.DOTALL)
NODE_FLAGS = ("--experimental-websocket", "--experimental-eventsource", "--no-warnings")
START_TIMEOUT_S = 90.0
# Runs one follow function of the page on a task; prints what it saw and how it ended. Given
# "new" for the task, it submits one itself with the API key and follows it at once: a worker
# picks a task up within milliseconds, so a follower that starts later may only see the end.
# Otherwise the task is the 202 body (JSON) of an earlier submission, or a forged one.
HARNESS = """
const [apiUrl, follow, task, apiKey] = process.argv.slice(2);
const seen = [];
const report = (outcome) => { console.log(JSON.stringify(outcome)); process.exit(0); };
setTimeout(() => report({ seen, error: "no outcome within 20 s" }), 20000);
process.on("beforeExit", () => report({ seen, error: "it stopped without an outcome" }));
const onEvent = (event) => seen.push(event);
const functions = {
  followOverWebSocket: (accepted) => followOverWebSocket(apiUrl, accepted, onEvent),
  followOverSse: (accepted) => followOverSse(apiUrl, accepted, onEvent),
  pollTask: (accepted) => pollTask(apiUrl, accepted, apiKey, onEvent, 50),
};
const submit = async () => {
  const body = { name: "example_task", args: { message: "hello", steps: 5, delay_s: 0.1 } };
  const reply = await fetch(`${apiUrl}/api/v1/tasks`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Authorization: `Bearer ${apiKey}` },
    body: JSON.stringify(body),
  });
  if (reply.status !== 202) throw new Error(`submit: HTTP ${reply.status}`);
  return reply.json();
};
(task === "new" ? submit() : Promise.resolve(JSON.parse(task)))
  .then((accepted) => functions[follow](accepted).then(
    (last) => ({ accepted, seen, last }), (error) => ({ accepted, seen, error: error.message }),
  ), (error) => ({ seen, error: error.message }))
  .then(report);
"""
# A 202 body for a task that does not exist, with a token the service never signed.
FORGED = {
    "task_id": "no-such-task",
    "status_url": "/api/v1/tasks/no-such-task",
    "events_url": "/api/v1/tasks/no-such-task/events?token=4102444800.forged",
    "ws_url": "/api/v1/tasks/no-such-task/ws?token=4102444800.forged",
}
FOLLOWERS = ("followOverWebSocket", "followOverSse", "pollTask")


def runs_the_service(combo: Combo) -> bool:
    return (
        combo.has_tasks
        and combo.python_version == "3.11"
        and combo.ci == "github"
        and combo.example_tasks == "yes"
        and combo.database == "none"  # the snippets follow tasks; the database changes nothing
    )


@pytest.fixture
def node() -> str:
    found = shutil.which("node")
    assert found, (
        "Node.js 20.10 or newer runs the docs' browser snippets: install it (Debian: nodejs)"
    )
    return found


@contextlib.contextmanager
def running_service(project: Path) -> Iterator[str]:
    """`just dev` on a free port; yields the API's URL once its workers are alive."""
    python = find_python("3.11")
    assert python, "Python 3.11 runs the rendered service"
    env = tool_env(python)
    run([tool("uv"), "sync", "--quiet"], project, env)
    port = free_port()
    log = (project / "dev.log").open("wb")
    service = subprocess.Popen(
        [tool("just"), "dev", "--port", str(port), "--no-reload"],
        cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready(url):
            assert service.poll() is None, (project / "dev.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the service did not get ready"
            time.sleep(0.2)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(service.pid, signal.SIGTERM)
        service.wait(timeout=30)
        log.close()


def ready(url: str) -> bool:
    try:
        reply = httpx.get(f"{url}/health/ready", timeout=2)
    except httpx.TransportError:
        return False
    return reply.status_code == 200 and set(reply.json()["workers"].values()) == {"alive"}


@pytest.mark.project_checks
@pytest.mark.parametrize("combo", combo_params(select=runs_the_service))
def test_docs_browser_snippets_follow_tasks(
    combo: Combo, bake: Callable[[Combo], Path], tmp_path: Path, node: str
) -> None:
    project = tmp_path / "project"
    shutil.copytree(bake(combo), project)
    snippets = JS_BLOCK.findall((project / "docs/background-tasks.md").read_text())
    assert len(snippets) == 3, "the page has the WebSocket, SSE and polling snippets"
    script = tmp_path / "follow.js"
    script.write_text("\n".join(snippets) + HARNESS)

    key = dev_api_key(project)

    def follow(function: str, url: str, task: str) -> dict[str, Any]:
        output = run([node, *NODE_FLAGS, str(script), url, function, task, key], tmp_path)
        lines = output.strip().splitlines()
        assert lines, f"{function} printed nothing"
        outcome: dict[str, Any] = json.loads(lines[-1])
        return outcome

    with running_service(project) as url:
        for function in FOLLOWERS:
            outcome = follow(function, url, "new")
            assert "error" not in outcome, (function, outcome)
            last, seen = outcome["last"], outcome["seen"]
            assert last["status"] == "complete", (function, outcome)
            assert last["progress"] == 100
            progress = [event["progress"] for event in seen if event["progress"] is not None]
            assert progress == sorted(progress), (function, seen)
            assert len(set(progress)) >= 2, (function, seen)  # it saw the task move
            if function != "pollTask":
                assert seen[0]["event"] == "state"
                assert last["event"] == "complete"
                assert last["data"]["result"]["message"] == "hello"
            else:
                assert last["result"]["message"] == "hello"

            late = follow(function, url, json.dumps(outcome["accepted"]))
            assert [event["status"] for event in late["seen"]] == ["complete"], (function, late)

            unknown = follow(function, url, json.dumps(FORGED))
            assert unknown["seen"] == [], (function, unknown)
            assert unknown.get("error"), (function, unknown)
        # A forged link is refused as a bad credential; a key sees that the task does not exist.
        assert "4401" in follow("followOverWebSocket", url, json.dumps(FORGED))["error"]
        assert "404" in follow("pollTask", url, json.dumps(FORGED))["error"]
