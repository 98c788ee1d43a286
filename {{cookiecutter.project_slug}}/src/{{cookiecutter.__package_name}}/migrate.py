"""Database migrations (Alembic), the same commands in development and in production:

    python -m {{ cookiecutter.__package_name }}.migrate upgrade [REVISION]
    python -m {{ cookiecutter.__package_name }}.migrate downgrade REVISION
    python -m {{ cookiecutter.__package_name }}.migrate revision -m MESSAGE
    python -m {{ cookiecutter.__package_name }}.migrate current
    python -m {{ cookiecutter.__package_name }}.migrate check

`upgrade` goes to the newest revision unless given one; `downgrade -1` reverts one, `base`
all; `revision` writes a migration from what changed in `infrastructure/models.py`; `check`
fails while the models have changes that no migration has. The migrations ship inside the
package, so the image runs them without the source tree (compose's `migrate` service).
DATABASE_URL says which database.
"""

import argparse
import sys
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.util.exc import CommandError

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(database_url: str | None = None) -> Config:
    """Alembic's configuration, made here rather than in an alembic.ini. `database_url`
    overrides DATABASE_URL (the tests migrate their own server)."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", "%%(year)d_%%(month).2d_%%(day).2d_%%(rev)s_%%(slug)s")
    # New revisions are made ruff-clean, as the rest of the code.
    config.set_section_option("post_write_hooks", "hooks", "fix,format")
    for name, arguments in (("fix", "check --fix --quiet"), ("format", "format --quiet")):
        config.set_section_option("post_write_hooks", f"{name}.type", "exec")
        config.set_section_option("post_write_hooks", f"{name}.executable", "ruff")
        config.set_section_option(
            "post_write_hooks", f"{name}.options", f"{arguments} REVISION_SCRIPT_FILENAME"
        )
    if database_url:
        config.attributes["database_url"] = database_url
    return config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    commands = parser.add_subparsers(dest="command", required=True)
    upgrade = commands.add_parser("upgrade", help="apply migrations up to REVISION")
    upgrade.add_argument("revision", nargs="?", default="head")
    downgrade = commands.add_parser("downgrade", help="revert migrations down to REVISION")
    downgrade.add_argument("revision")
    revision = commands.add_parser("revision", help="write a migration from the models' changes")
    revision.add_argument("-m", "--message", required=True)
    commands.add_parser("current", help="print the database's revision")
    commands.add_parser("check", help="fail when the models have changes no migration has")
    args = parser.parse_args(argv)
    config = alembic_config()
    try:
        if args.command == "upgrade":
            command.upgrade(config, args.revision)
        elif args.command == "downgrade":
            command.downgrade(config, args.revision)
        elif args.command == "revision":
            command.revision(config, message=args.message, autogenerate=True)
        elif args.command == "current":
            command.current(config)
        else:
            command.check(config)
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
