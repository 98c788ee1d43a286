"""The Python snippets of docs/ run as written.

A snippet whose first line names a file (`# src/<package>/services/x.py`) becomes that module,
so that later snippets import it exactly as the page shows.
"""

import re
import sys
from collections.abc import {% if cookiecutter.cache_backend != "none" %}Callable, {% endif %}Iterator
from pathlib import Path
from types import ModuleType

import pytest
{%- if cookiecutter.cache_backend != "none" %}
from arq.worker import Worker
{%- endif %}
from fastapi import FastAPI
{%- if cookiecutter.__database == "postgres" %}
from sqlalchemy.ext.asyncio import AsyncEngine
{%- endif %}

{% if cookiecutter.__database == "postgres" -%}
from {{ cookiecutter.__package_name }}.infrastructure.database import session_factory
{% endif -%}
{% if cookiecutter.cache_backend == "falkordb" -%}
from {{ cookiecutter.__package_name }}.infrastructure.graph import (
    SocialGraph,
    close_graph_client,
    create_graph_client,
)
{% endif -%}
{% if cookiecutter.__database == "postgres" -%}
from {{ cookiecutter.__package_name }}.infrastructure.outbox_relay import OutboxRelay
{% endif -%}
{% if cookiecutter.cache_backend != "none" -%}
from {{ cookiecutter.__package_name }}.infrastructure.queue import TaskQueue
from {{ cookiecutter.__package_name }}.infrastructure.tasks import as_worker_function
{% endif -%}
from {{ cookiecutter.__package_name }}.main import create_app
from {{ cookiecutter.__package_name }}.settings import Settings

from .support import serve

PROJECT = Path(__file__).resolve().parent.parent
DOCS = PROJECT / "docs"
SNIPPET = re.compile(r"```python\n(.*?)```", re.DOTALL)
MODULE_PATH = re.compile(r"# src/([\w/]+)\.py\n")
TABLE_DEFAULT = re.compile(r"^\| `([A-Z][A-Z0-9_]*)` \| `([^`]*)` \|", re.MULTILINE)


def load_snippets(page: str) -> Iterator[ModuleType]:
    """Run each Python block of the page in order, as a module; yield the modules."""
    added: list[str] = []
    try:
        for number, code in enumerate(SNIPPET.findall((DOCS / page).read_text()), start=1):
            named = MODULE_PATH.match(code)
            name = named.group(1).replace("/", ".") if named else f"docs_snippet_{number}"
            module = ModuleType(name)
            sys.modules[name] = module
            added.append(name)
            exec(compile(code, f"{DOCS / page}:{name}", "exec"), module.__dict__)
            yield module
    finally:
        for name in added:
            sys.modules.pop(name, None)


def with_router(settings: Settings, module: ModuleType) -> FastAPI:
    app = create_app(settings)
    app.include_router(module.router)
    return app


async def test_services_page_endpoint_counts_primes(settings: Settings) -> None:
    """It serves the page's primes endpoint: a cached answer, 422 for a bound out of range."""
    *_, api = list(load_snippets("services.md"))
    app = with_router(settings, api)
    async with serve(app) as client:
        response = await client.get("/api/v1/primes", params={"below": 30})
        assert response.json() == {"below": 30, "count": 10}
        assert (await client.get("/api/v1/primes", params={"below": 1})).status_code == 422
{%- if cookiecutter.cache_backend != "none" %}


async def test_background_tasks_page_task_runs_in_a_worker(
    settings: Settings, task_queue: TaskQueue, make_worker: Callable[..., Worker]
) -> None:
    """It runs the page's example task, registered as the page shows, in a real worker."""
    _, registered, _ = list(load_snippets("background-tasks.md"))
    spec = registered.spec
    task_id = await task_queue.enqueue(spec.name, texts=["one two", "three"])
    assert task_id
    await make_worker(functions=[as_worker_function(spec, settings)]).main()
    state = await task_queue.state(task_id)
    assert state is not None
    assert (state.status, state.progress) == ("complete", 100)
    assert state.result == {"texts": 2, "words": 3}
    assert spec.args_model is not None
    assert spec.args_model.model_validate({"texts": ["x"]})
{%- else %}


async def test_background_tasks_page_snippet_runs_after_the_response(
    settings: Settings,
) -> None:
    """It answers 202 and records the sign-up once the response is sent."""
    (page,) = list(load_snippets("background-tasks.md"))
    async with serve(with_router(settings, page)) as client:
        response = await client.post("/signups", params={"email": "ada@example.com"})
    assert response.status_code == 202
    assert page.sent == ["ada@example.com"]
{%- endif %}
{%- if cookiecutter.__database == "postgres" %}


async def test_database_page_route_task_and_enqueue_on_commit(
    settings: Settings, database: AsyncEngine, task_queue: TaskQueue
) -> None:
    """The page's route counts users, its task renames one through `ctx["db"]`, and its
    sign-up enqueues on commit."""
    route, task, signing_up = list(load_snippets("database.md"))
    sessions = session_factory(database)
    for email in ("ada@example.com", "grace@example.com"):
        async with sessions() as session:
            assert await signing_up.sign_up(session, email)
    async with serve(with_router(settings, route)) as client:
        assert (await client.get("/api/v1/user-count")).json() == {"users": 2}
    assert await task.rename_user({"db": sessions}, "ada@example.com", "Ada L.") == 1
    relay = OutboxRelay(database, task_queue, poll_interval_s=1)
    assert await relay.relay_once() == 2
{%- endif %}
{%- if cookiecutter.cache_backend == "falkordb" %}


async def test_graph_page_router_follows_and_suggests(settings: Settings, redis: object) -> None:
    """It serves the page's social router on the real FalkorDB server."""
    (social,) = list(load_snippets("cache-graph.md"))
    app = with_router(settings, social)
    graph_client = create_graph_client(settings)
    app.state.social_graph = SocialGraph(graph_client)
    try:
        async with serve(app) as client:
            for name, other in [("ada", "grace"), ("grace", "linus"), ("ada", "grace")]:
                response = await client.put(f"/api/v1/users/{name}/follows/{other}")
                assert response.status_code == 204
            response = await client.get("/api/v1/users/ada/suggestions")
            assert response.json() == [{"name": "linus", "shared": 1}]
            bad = await client.put("/api/v1/users/ada/follows/bad%20name")
            assert bad.status_code == 422
    finally:
        await close_graph_client(graph_client)
{%- endif %}


@pytest.mark.parametrize(
    "page", ["README.md", *sorted(f"docs/{path.name}" for path in DOCS.glob("*.md"))]
)
def test_configuration_tables_state_the_real_defaults(page: str) -> None:
    """It finds every `VARIABLE` | `default` row of the page equal to the Settings default."""
    fields = Settings.model_fields
    rows = TABLE_DEFAULT.findall((PROJECT / page).read_text())
    for variable, documented in rows:
        default = fields[variable.lower()].default
        # Booleans are written as in the environment: true, false.
        expected = str(default).lower() if isinstance(default, bool) else str(default)
        assert documented == expected, f"{page}: {variable}"


@pytest.mark.parametrize("page", sorted(path.name for path in DOCS.glob("*.md")))
def test_every_snippet_runs(page: str) -> None:
    """It runs every Python block of every page without error."""
    assert all(isinstance(module, ModuleType) for module in load_snippets(page))
