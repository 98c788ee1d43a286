"""The operator console of a rendered service in a real browser: Debian's Chromium, driven by
Playwright for Python, against the service started with its own `just dev`.

It signs in, watches a task go queued -> in progress -> complete on its page without a reload,
aborts a running task, reads the recent list, retries a dead letter, pages through a long list,
reads the overview's chart, and fails on any error the pages log. With CONSOLE_SCREENSHOTS set
to a folder, it saves a picture of each page there (scripts/console_screenshots.py puts them
into the template's docs).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import Combo, combo_params, dev_api_key
from playwright.sync_api import BrowserContext, ConsoleMessage, expect, sync_playwright
from test_browser_snippets import running_service, runs_the_service

CHROMIUM = "/usr/bin/chromium"
# As root, without a sandbox; no traffic of its own (the machine may have no internet).
CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # an upper bound for a loaded machine, not a timing claim
SLOTS = 10  # WORKER_MAX_JOBS of the rendered .env
DURATION = re.compile(r"^(\d+ ms|\d+\.\d s|\d+ min \d+ s|\d+ h \d+ min)$")


def runs_the_console(combo: Combo) -> bool:
    """The snippets' service, on one broker: the console reads what both write alike."""
    return runs_the_service(combo) and combo.cache_backend == "redis"


@pytest.fixture
def chromium() -> str:
    assert Path(CHROMIUM).exists(), (
        "Debian's chromium runs the console test: `apt-get install chromium` (.ci/run does)"
    )
    return CHROMIUM


@pytest.fixture
def browser(chromium: str) -> Iterator[BrowserContext]:
    """A new browser profile, as a first-time visitor has."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_FLAGS)
        context = browser.new_context(viewport={"width": 1280, "height": 860})
        context.set_default_timeout(WAIT_MS)
        try:
            yield context
        finally:
            browser.close()


def submit(api: httpx.Client, name: str, **args: Any) -> str:
    reply = api.post("/api/v1/tasks", json={"name": name, "args": args})
    assert reply.status_code == 202, reply.text
    task_id: str = reply.json()["task_id"]
    return task_id


@pytest.mark.project_checks
@pytest.mark.parametrize("combo", combo_params(select=runs_the_console))
def test_the_console_in_chromium(
    combo: Combo, bake: Callable[[Combo], Path], tmp_path: Path, browser: BrowserContext
) -> None:
    expect.set_options(timeout=WAIT_MS)
    project = tmp_path / "project"
    shutil.copytree(bake(combo), project)
    key = dev_api_key(project)  # operator among its scopes
    pictures = Path(os.environ.get("CONSOLE_SCREENSHOTS", tmp_path / "screenshots"))
    pictures.mkdir(parents=True, exist_ok=True)
    page = browser.new_page()
    problems: list[str] = []

    def console_message(message: ConsoleMessage) -> None:
        if message.type == "error":
            problems.append(message.text)

    page.on("console", console_message)
    page.on("pageerror", lambda error: problems.append(str(error)))

    def picture(name: str) -> None:
        page.screenshot(path=pictures / f"console-{name}.png")

    with (
        running_service(project) as url,
        httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=10) as api,
    ):
        page.goto(f"{url}/console/tasks?status=failed")
        expect(page).to_have_url(re.compile(r"/console/sign-in\?next="))
        page.fill("#key", "key_not_a_real_one")
        page.click("button:has-text('Sign in')")
        expect(page.locator(".error")).to_have_text("This key or token is not known.")
        picture("sign-in")
        page.fill("#key", key)
        page.click("button:has-text('Sign in')")
        expect(page).to_have_url(f"{url}/console/tasks?status=failed")  # where it was going

        # Every worker slot of the default queue taken: the next task waits, visibly.
        blockers = [
            submit(api, "example_task", message=f"slot {i}", steps=100, delay_s=0.3)
            for i in range(SLOTS)
        ]
        watched = submit(api, "example_task", message="watched", steps=10, delay_s=0.3)
        page.goto(f"{url}/console/tasks/{watched}")
        expect(page.locator("#live")).to_have_text("live")
        page.evaluate("window.sameDocument = true")  # gone if the page reloads
        status = page.locator("#task-status")
        expect(status).to_have_text("queued")
        picture("task-queued")

        # An operator aborts a running task in another tab: its slot goes to the watched task.
        other = browser.new_page()
        other.goto(f"{url}/console/tasks/{blockers[0]}")
        expect(other.locator("#task-status")).to_have_text("in progress")
        other.click("button:has-text('Abort')")
        expect(other.locator(".notice")).to_contain_text("cancelled by its worker")
        expect(other.locator("#task-status")).to_have_text("aborted")
        other.close()

        expect(status).to_have_text("in progress")
        expect(page.locator("progress")).to_be_visible()
        expect(status).to_have_text("complete")
        expect(page.locator(".timeline li").last).to_contain_text("complete")
        assert page.evaluate("window.sameDocument") is True
        picture("task")

        # "Tasks" opens on the recent tasks of every state, each with its start and duration.
        page.click("header a:has-text('Tasks')")
        expect(page).to_have_url(f"{url}/console/tasks")
        expect(page.locator(".tabs a[aria-current='page']")).to_have_text("recent")
        expect(page.locator(f"tr[data-task-id='{watched}'] .status")).to_have_text("complete")
        expect(page.locator(f"tr[data-task-id='{blockers[0]}'] .status")).to_have_text("aborted")
        running = page.locator(f"tr[data-task-id='{blockers[1]}']")  # or done, on a slow day
        expect(running.locator(".duration")).to_have_text(DURATION)
        picture("recent")
        for blocker in blockers[1:]:
            assert api.delete(f"/api/v1/tasks/{blocker}").status_code == 202

        # A dead letter, retried from its list (the media file does not exist: no retry helps).
        broken = submit(api, "generate_thumbnail", media_id="0" * 32)
        page.goto(f"{url}/console/dead-letters")
        row = page.locator(f"tr[data-task-id='{broken}']")
        expect(row).to_be_visible()  # arrives live
        expect(row).to_contain_text("NonRetryableError")
        picture("dead-letters")
        row.locator("button:has-text('Retry')").click()
        expect(page).to_have_url(f"{url}/console/tasks/{broken}?notice=retried")
        expect(page.locator(".notice")).to_have_text("The task was queued again.")
        expect(page.locator(".timeline li")).to_have_count(4)  # started, failed; again

        # A long list, paged on the server.
        quick = [submit(api, "example_task", message=f"q{i}", steps=1) for i in range(60)]
        page.goto(f"{url}/console/tasks?status=complete&name=example_task")
        pager = page.locator(".pager span")
        expect(pager).to_contain_text("Page 1 of 2")
        expect(page.locator(f"tr[data-task-id='{quick[-1]}']")).to_be_visible()
        picture("tasks")
        page.click("a[rel='next']")
        expect(page).to_have_url(re.compile(r"page=2"))
        expect(pager).to_contain_text("Page 2 of 2")
        assert page.locator("tbody tr").count() >= 1

        page.goto(f"{url}/console")
        workers = page.locator("section:has(h2:text('Workers')) tbody tr")
        expect(workers).to_have_count(2)  # one per queue
        expect(page.locator("svg.chart rect")).to_have_count(60)  # a bar a minute
        expect(page.locator("svg.chart text.time")).to_have_count(4)  # each quarter hour
        expect(page.locator("svg.chart text.time").first).to_have_text(re.compile(r"^\d\d:\d\d$"))
        expect(page.locator("svg.chart text.count").first).to_have_text(re.compile(r"^[1-9]\d*$"))
        expect(page.locator("main a[href='/console/dead-letters']")).to_have_text("1 dead letter")
        picture("overview")

        page.click("button:has-text('Sign out')")
        expect(page).to_have_url(f"{url}/console/sign-in")
        page.goto(f"{url}/console")
        expect(page).to_have_url(re.compile(r"/console/sign-in"))
    assert problems == []
