"""Make an API key: `python -m <package>.keys create NAME --scope SCOPE` (`just key`).

Prints the key on the first line (give it to the client; it is not kept anywhere) and, on the
second, its entry for the API_KEYS setting (comma-separated entries; the service keeps only
the key's hash).
"""

import argparse
import sys

from .access import SCOPES, SUBMIT_ONE_PREFIX, create_key
from .tasks.registry import API_TASKS

PROG = "python -m {{ cookiecutter.__package_name }}.keys"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="API keys")
    commands = parser.add_subparsers(dest="command", required=True)
    create = commands.add_parser("create", help="make a key; prints it, then its API_KEYS entry")
    create.add_argument("name", help="who holds it, e.g. mobile-app (it names the principal)")
    create.add_argument(
        "--scope",
        action="append",
        required=True,
        help=f"{', '.join(SCOPES)} or {SUBMIT_ONE_PREFIX}<task>; repeat for more",
    )
    args = parser.parse_args(argv)
    unknown = [
        scope.removeprefix(SUBMIT_ONE_PREFIX)
        for scope in args.scope
        if scope.startswith(SUBMIT_ONE_PREFIX)
        and scope.removeprefix(SUBMIT_ONE_PREFIX) not in API_TASKS
    ]
    if unknown:
        parser.error(f"no API task named {unknown[0]!r}: the API accepts {', '.join(API_TASKS)}")
    try:
        key, entry = create_key(args.name, args.scope)
    except ValueError as exc:
        parser.error(str(exc))
    print(key)
    print(entry.entry)
    return 0


if __name__ == "__main__":
    sys.exit(main())
