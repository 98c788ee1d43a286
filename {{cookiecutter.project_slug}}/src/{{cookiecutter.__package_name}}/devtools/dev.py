{% if cookiecutter.__database == "postgres" -%}
"""`just dev`: the API and both workers, with auto-reload, on an embedded server unless
`REDIS_URL` is set, and an embedded PostgreSQL, migrated, unless `DATABASE_URL` is set.
{%- else -%}
"""`just dev`: the API and both workers, with auto-reload, on an embedded server unless
`REDIS_URL` is set.
{%- endif %}

Run as `python -m {{ cookiecutter.__package_name }}.devtools.dev`, with `--host H`,
`--port P` or `--no-reload`.
Ctrl-C (or SIGTERM) stops everything it started.
"""

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from dotenv import dotenv_values

from ..access import hash_key
from ..settings import Settings
{%- if cookiecutter.__database == "postgres" %}
from .embedded_postgres import EmbeddedPostgres, EmbeddedPostgresUnavailableError
{%- endif %}
from .embedded_redis import EmbeddedRedis, EmbeddedRedisUnavailableError
{%- if cookiecutter.__examples == "yes" %}
from .mailbox import local_mailbox
{%- endif %}

SERVICE = "{{ cookiecutter.__package_name }}"
SERVICE_DIR = Path(__file__).resolve().parent.parent
{%- if cookiecutter.__database == "postgres" %}
# The embedded database keeps its data here between runs (git-ignored); delete it to start over.
DEV_DATABASE_DIR = Path(".dev/postgres")
{%- endif %}


QUEUES = ("default", "slow")
# The addresses of what `just dev` started, for a second terminal (`just shell` reads them);
# removed when it stops.
SERVICES_FILE = Path(".dev/services.env")


def worker_command(queue: str, *, reload: bool) -> list[str]:
    command = [sys.executable, "-m", f"{SERVICE}.worker", "--queue", queue]
    return [*command, "--reload"] if reload else command


def api_command(host: str, port: int, *, reload: bool) -> list[str]:
    command = [sys.executable, "-m", "uvicorn", f"{SERVICE}.main:create_app", "--factory"]
    command += ["--host", host, "--port", str(port)]
    if reload:
        command += ["--reload", "--reload-dir", str(SERVICE_DIR)]
    return command


def stop(signum: int, frame: FrameType | None) -> None:
    """The first SIGINT or SIGTERM stops everything. Ctrl-C and `just` deliver one to each
    process of the group, so more follow: they must not cut the clean-up short."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt


def run(commands: list[list[str]], env: dict[str, str]) -> int:
    """Start every command, wait until one ends or we are stopped, then stop the others."""
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    processes = [subprocess.Popen(command, env=env) for command in commands]  # noqa: S603
    try:
        while True:
            for process in processes:
                code = process.poll()
                if code is not None:
                    return code
            time.sleep(0.2)
    except KeyboardInterrupt:
        return 0
    finally:
        # Nor may a signal that comes while a command that ended by itself is cleaned up.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for process in processes:
            process.terminate()
        for process in processes:
            process.wait()


def how_to_authenticate(settings: Settings, dev_key: str | None) -> str:
    """How to call the API with the development key of `.env` (or how to get a key)."""
    if settings.auth_disabled:
        return "AUTH_DISABLED=true: the API lets every request in."
    if dev_key and hash_key(dev_key) in {key.sha256 for key in settings.api_keys}:
        return (
            "Call the API with the development key of .env (every scope): "
            f"Authorization: Bearer {dev_key}\n"
            "  In /docs: Authorize, then paste the key."
        )
    return (
        "No development key in .env: make one with `just key dev --scope operator`, then add "
        "its second line to API_KEYS in .env (or set AUTH_DISABLED=true there)."
    )


def write_services(addresses: dict[str, str]) -> None:
    """Write `addresses` (NAME=value lines) where a second terminal finds them."""
    SERVICES_FILE.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{name}={value}" for name, value in addresses.items()]
    SERVICES_FILE.write_text("# Written by `just dev` while it runs.\n" + "\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-reload", action="store_true", help="do not restart on code changes")
    args = parser.parse_args(argv)
    reload = not args.no_reload
    commands = [api_command(args.host, args.port, reload=reload)]
    commands += [worker_command(queue, reload=reload) for queue in QUEUES]
    # Each line as it is written, also when the output is not a terminal (`just dev | tee`).
    env = dict(os.environ) | {"PYTHONUNBUFFERED": "1"}
    # A reload logs the file that changed, not the start and stop of every process.
    env.setdefault("LOG_LIFECYCLE", "false")
    settings = Settings()
    print(f"API: http://{args.host}:{args.port}  docs: http://{args.host}:{args.port}/docs")
    print(how_to_authenticate(settings, dotenv_values(".env").get("DEV_API_KEY")), flush=True)
    started = {"API_URL": f"http://{args.host}:{args.port}"}
    with contextlib.ExitStack() as servers:
{%- if cookiecutter.__examples == "yes" %}
        print(servers.enter_context(local_mailbox(settings)), flush=True)
{%- endif %}
        try:
            if "redis_url" in settings.model_fields_set:
                print("Using REDIS_URL from the environment or .env.", flush=True)
            else:
                redis = servers.enter_context(EmbeddedRedis(avoid={args.port}))
                env["REDIS_URL"] = started["REDIS_URL"] = redis.url
                print(f"Embedded server: {redis.url} (stopped with Ctrl-C)", flush=True)
{%- if cookiecutter.__database == "postgres" %}
            if "database_url" in settings.model_fields_set:
                print("Using DATABASE_URL from the environment or .env.", flush=True)
            else:
                database = servers.enter_context(EmbeddedPostgres(DEV_DATABASE_DIR))
                env["DATABASE_URL"] = started["DATABASE_URL"] = database.url
                print(f"Embedded PostgreSQL: {database.url}", flush=True)
                print(f"  its data stays in {DEV_DATABASE_DIR}/ between runs", flush=True)
        except (EmbeddedRedisUnavailableError, EmbeddedPostgresUnavailableError) as exc:
            print(f"Cannot start an embedded server: {exc}", file=sys.stderr)
            return 1
        migrate = [sys.executable, "-m", f"{SERVICE}.migrate", "upgrade"]
        if subprocess.run(migrate, env=env, check=False).returncode != 0:  # noqa: S603
            print("The migrations failed (above): the service was not started.", file=sys.stderr)
            return 1
{%- else %}
        except EmbeddedRedisUnavailableError as exc:
            print(f"Cannot start an embedded server: {exc}", file=sys.stderr)
            return 1
{%- endif %}
        write_services(started)
        servers.callback(SERVICES_FILE.unlink, missing_ok=True)
        print(f"Their addresses, for a second terminal: {SERVICES_FILE}", flush=True)
        print("  `just shell` opens an asyncio REPL on them", flush=True)
        return run(commands, env)


if __name__ == "__main__":
    sys.exit(main())
