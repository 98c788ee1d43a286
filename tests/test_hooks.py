"""The hooks as units: answer validation, and the table of what each option removes."""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import PROMPTS, ROOT
from cookiecutter.exceptions import FailedHookException
from cookiecutter.main import cookiecutter


def load_hook(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "hooks" / f"{name}.py")
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


pre_gen = load_hook("pre_gen_project")
post_gen = load_hook("post_gen_project")


def answers(**overrides: str) -> dict[str, str]:
    """The default answers, as cookiecutter passes them to the hooks, with some changed."""
    base = {key: value[0] if isinstance(value, list) else value for key, value in PROMPTS.items()}
    base["project_slug"] = "media-service"
    return {key: value for key, value in {**base, **overrides}.items() if isinstance(value, str)}


def test_default_answers_are_accepted() -> None:
    """It lets the defaults through."""
    assert pre_gen.validate(answers()) is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"project_slug": "media service"}, "lowercase letters"),
        ({"project_slug": "1media"}, "starting with a letter"),
        ({"project_slug": "Media-Service"}, "lowercase letters"),
        ({"project_slug": "media--service"}, "single hyphens"),
        ({"project_slug": "class"}, "Python keyword"),
        ({"project_slug": "json"}, "standard library"),
        ({"project_slug": "email"}, "standard library"),
        ({"project_slug": "print"}, "standard library"),
        ({"project_slug": "fastapi"}, "depends on"),
        ({"project_slug": "tests"}, "depends on"),
        ({"project_slug": "a" * 41}, "keep it to 40 or fewer"),
        ({"author_email": "not-an-email"}, "not an e-mail address"),
        ({"author_email": "a@b"}, "not an e-mail address"),
        ({"python_version": "3.10"}, "3.11, 3.12, 3.13"),
        ({"cache_backend": "memcached"}, "redis, falkordb, none"),
        ({"example_tasks": "maybe"}, "yes, no"),
        ({"ci": "gitlab"}, "github, none"),
        ({"database": "mysql"}, "none, postgres"),
        ({"version": "one"}, "release number"),
        ({"project_name": "  "}, "project_name is empty"),
        ({"project_name": "M" * 61}, "keep it to 60 or fewer"),
        ({"description": 'Say "hi"'}, "double quotes"),
        ({"author_name": "back\\slash"}, "backslashes"),
    ],
)
def test_bad_answers_get_one_clear_sentence(overrides: dict[str, str], expected: str) -> None:
    """It names what is wrong in one line, ending as a sentence."""
    problem = pre_gen.validate(answers(**overrides))
    assert problem is not None
    assert expected in problem
    assert "\n" not in problem
    assert problem.endswith(".")


def test_rejected_answers_leave_nothing_behind(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """It stops cookiecutter with the sentence on stderr and an empty output folder."""
    with pytest.raises(FailedHookException):
        cookiecutter(
            str(ROOT),
            no_input=True,
            output_dir=str(tmp_path),
            extra_context={"project_slug": "1-bad-slug"},
        )
    assert list(tmp_path.iterdir()) == []
    assert "must be lowercase letters" in capfd.readouterr().err


@pytest.mark.parametrize(
    ("overrides", "removed", "kept"),
    [
        (
            {"cache_backend": "none"},
            {"src/media_service/infrastructure/redis.py", "src/media_service/devtools"},
            {"src/media_service/infrastructure/cache_in_process.py", "tests/test_cache.py"},
        ),
        (
            {"cache_backend": "redis"},
            {"src/media_service/infrastructure/graph.py", "docs/cache-graph.md"},
            {"src/media_service/infrastructure/redis.py"},
        ),
        (
            {"cache_backend": "falkordb"},
            {"src/media_service/infrastructure/cache_in_process.py"},
            {"src/media_service/infrastructure/graph.py", "tests/test_graph.py"},
        ),
        ({"ci": "none"}, {".github"}, set()),
        ({"ci": "github"}, set(), {".github"}),
    ],
)
def test_removal_table(overrides: dict[str, str], removed: set[str], kept: set[str]) -> None:
    """It maps each option to the paths it turns off, and no others."""
    removals, _ = post_gen.plan(answers(**overrides))
    assert removed <= set(removals)
    assert not kept & set(removals)


def test_in_process_cache_takes_the_cache_module_name_when_none() -> None:
    """It renames the in-process cache to infrastructure/cache.py for cache_backend=none."""
    _, renames = post_gen.plan(answers(cache_backend="none"))
    assert renames == [
        (
            "src/media_service/infrastructure/cache_in_process.py",
            "src/media_service/infrastructure/cache.py",
        )
    ]
    assert post_gen.plan(answers(cache_backend="redis"))[1] == []


def make_tree(root: Path, files: list[str]) -> None:
    for relative in files:
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x = 1\n")


def test_apply_removes_renames_and_tidies(tmp_path: Path) -> None:
    """It removes, renames, drops bytecode and the folders left empty, and writes .env."""
    make_tree(
        tmp_path,
        [
            "src/media_service/infrastructure/cache.py",
            "src/media_service/infrastructure/cache_in_process.py",
            "src/media_service/infrastructure/redis.py",
            "src/media_service/__pycache__/main.cpython-311.pyc",
            ".github/workflows/ci.yml",
            "docs/services.md",
        ],
    )
    (tmp_path / ".env.example").write_text("# header\nREDIS_PASSWORD=change-me\nLOG_LEVEL=INFO\n")
    post_gen.apply(tmp_path, answers(cache_backend="none", ci="none"))
    files = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    assert (tmp_path / ".env").read_text().splitlines()[0] == post_gen.ENV_HEADER
    assert "# header" not in (tmp_path / ".env").read_text()
    assert files == [
        ".env",
        ".env.example",
        "docs",
        "docs/services.md",
        "src",
        "src/media_service",
        "src/media_service/infrastructure",
        "src/media_service/infrastructure/cache.py",
    ]


def test_env_gets_a_fresh_secret_each_time(tmp_path: Path) -> None:
    """It replaces each secret of .env.example with a new random value, keeping other lines."""
    (tmp_path / ".env.example").write_text("REDIS_PASSWORD=change-me\nLOG_LEVEL=INFO\n")
    secrets = set()
    for _ in range(2):
        post_gen.write_env(tmp_path)
        lines = (tmp_path / ".env").read_text().splitlines()
        assert "LOG_LEVEL=INFO" in lines
        secret = next(line for line in lines if line.startswith("REDIS_PASSWORD="))
        assert len(secret) > len("REDIS_PASSWORD=") + 30
        secrets.add(secret)
    assert len(secrets) == 2


@pytest.mark.parametrize("name", ["pre_gen_project", "post_gen_project"])
def test_hooks_never_touch_the_network_or_start_processes(name: str) -> None:
    """It keeps the hooks offline and free of git: cruft runs them again in its own temporary
    folders on every update, so they must need nothing but the answers."""
    tree = ast.parse((ROOT / "hooks" / f"{name}.py").read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    }
    imported |= {
        (node.module or "").split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom)
    }
    assert not imported & {"subprocess", "socket", "urllib", "http", "git", "requests", "httpx"}
    assert "os.system" not in ast.unparse(tree)


@pytest.mark.parametrize(
    ("overrides", "started"),
    [
        ({"database": "postgres"}, "embedded Redis and PostgreSQL servers"),
        ({"cache_backend": "none"}, "the API with reload"),
    ],
)
def test_a_render_ends_by_saying_what_to_do_next(
    overrides: dict[str, str], started: str, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """It ends with four lines: where the project is, `cd` and `just dev` (and what that
    starts), `just test`, and that `.env` holds fresh local secrets."""
    context = {"project_name": "Orders API", **overrides}
    cookiecutter(str(ROOT), no_input=True, output_dir=str(tmp_path), extra_context=context)
    lines = capfd.readouterr().out.splitlines()[-4:]
    project = tmp_path / "orders-api"
    assert lines[0] == f"Orders API is ready in {project}"
    assert lines[1].split("#")[0].strip() == "cd orders-api && just dev"
    assert started in lines[1]
    assert lines[2].split("#")[0].strip() == "just test"
    assert lines[3].startswith(".env holds fresh local secrets")
    assert lines[1].index("#") == lines[2].index("#")  # the comments line up
    assert (project / ".env").is_file()
