"""The curl commands of the README and docs/ work as written, credentials included.

Each command of a page's `sh` blocks is sent, in the page's order, to the service in-process:
`localhost:8000` is the test's app, `$KEY` a key with every scope, and a placeholder such as
`<task_id>` the value of that field in an earlier reply of the page. A command answered 404
runs again once the workers have run what is queued (a thumbnail exists once made).
"""

import re
import shlex
from collections.abc import Callable
{%- if cookiecutter.__examples == "yes" %}
from io import BytesIO
{%- endif %}
from pathlib import Path
from typing import Any

import httpx
import pytest
from arq.worker import Worker
{%- if cookiecutter.__examples == "yes" %}
from PIL import Image
{%- endif %}

from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import TEST_KEY, serve

PROJECT = Path(__file__).resolve().parent.parent
SHELL_BLOCK = re.compile(r"```sh\n(.*?)```", re.DOTALL)
PLACEHOLDER = re.compile(r"<(\w+)>")
SERVICE = "localhost:8000"
QUIET_FLAGS = {"-s", "-i", "-si"}  # flags that change what curl prints, not what it sends
ALIASES = {"id": "task_id"}  # what a placeholder is called where the README is short
DOCS = ["README.md", *sorted(f"docs/{path.name}" for path in (PROJECT / "docs").glob("*.md"))]
PAGES = [page for page in DOCS if "curl " in (PROJECT / page).read_text()]


def curl_commands(page: str) -> list[list[str]]:
    """The arguments of each curl command of the page's shell blocks, split as a shell would:
    a line that ends in a backslash or inside a quotation goes on on the next."""
    commands = []
    for block in SHELL_BLOCK.findall((PROJECT / page).read_text()):
        pending = ""
        for line in block.splitlines():
            pending += line + "\n"
            if line.endswith("\\"):
                continue
            try:
                words = shlex.split(pending.replace("\\\n", " "), comments=True)
            except ValueError:  # No closing quotation: not yet
                continue
            pending = ""
            if words[:1] == ["curl"]:
                commands.append(words[1:])
        assert not pending, f"{page}: a command never ends: {pending}"
    return commands


{% if cookiecutter.__examples == "yes" -%}
def upload(source: str) -> tuple[str, bytes]:
    """The file that `-F file=@photo.jpg` sends: a JPEG made here."""
    assert source == "@photo.jpg", f"no such file to send: {source}"
    buffer = BytesIO()
    Image.new("RGB", (640, 480), (200, 120, 40)).save(buffer, format="JPEG")
    return "photo.jpg", buffer.getvalue()


{% endif -%}
def request_of(words: list[str], found: dict[str, str]) -> dict[str, Any]:
    """What curl would send, as httpx's request arguments."""
    method: str | None = None
    url: str | None = None
    headers: dict[str, str] = {}
    body: bytes | None = None
    files: dict[str, tuple[str, bytes]] = {}
    given = iter(words)

    def fill(text: str) -> str:
        def value(match: re.Match[str]) -> str:
            name = ALIASES.get(match.group(1), match.group(1))
            assert name in found, f"no earlier reply of the page gave {match.group(0)}"
            return found[name]

        return PLACEHOLDER.sub(value, text.replace("$KEY", TEST_KEY))

    for word in given:
        if word == "-X":
            method = next(given)
        elif word == "-H":
            name, _, header = fill(next(given)).partition(":")
            headers[name.strip()] = header.strip()
        elif word == "-d":
            body = next(given).encode()
{%- if cookiecutter.__examples == "yes" %}
        elif word == "-F":
            field, _, source = next(given).partition("=")
            files[field] = upload(source)
{%- endif %}
        elif word == "-o":
            next(given)  # where curl writes the answer
        else:
            assert word in QUIET_FLAGS or not word.startswith("-"), f"unknown flag {word}"
            if not word.startswith("-"):
                url = fill(word)
    assert url is not None, f"no address in {words}"
    assert url.startswith(SERVICE), f"not a request to {SERVICE}: {url}"
    posting = body is not None or files
    return {
        "method": method or ("POST" if posting else "GET"),
        "url": url.removeprefix(SERVICE),
        "headers": headers,
        "content": body,
        "files": files or None,
    }


{% if cookiecutter.__examples == "yes" -%}
@pytest.fixture
def settings(settings: Settings, tmp_path: Path) -> Settings:
    return settings.model_copy(update={"media_dir": tmp_path / "media"})


{% endif -%}
@pytest.mark.parametrize("page", PAGES)
async def test_every_curl_command_works_as_written(
    page: str, settings: Settings, make_worker: Callable[..., Worker]
) -> None:
    commands = curl_commands(page)
    assert commands
    found: dict[str, str] = {}
    async with serve(create_app(settings), key=None) as client:  # the commands' key only
        for words in commands:
            request = request_of(words, found)
            reply = await client.request(**request)
            if reply.status_code == httpx.codes.NOT_FOUND:
                for queue in (settings.task_queue, settings.slow_task_queue):
                    await make_worker(queue=queue).main()
                reply = await client.request(**request)
            assert reply.is_success, f"{page}: curl {shlex.join(words)}\n{reply.text}"
            if reply.headers.get("content-type") == "application/json":
                found |= ids_in(reply.json())


def ids_in(answer: object) -> dict[str, str]:
    """The `..._id` fields of a reply, for the placeholders of later commands."""
    fields = answer.items() if isinstance(answer, dict) else []
    return {key: str(value) for key, value in fields if key.endswith("_id")}
