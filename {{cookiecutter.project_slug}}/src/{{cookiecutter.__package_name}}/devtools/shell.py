"""`just shell`: Python's asyncio REPL, where `await` works at the prompt, on the servers that
`just dev` started.

`just dev` writes their addresses (REDIS_URL, DATABASE_URL when it started them, API_URL) to
.dev/services.env; this puts them in the environment, unless it sets them already, so that the
settings, and so `get_task_pool()` and `enqueue_task`, reach those servers. A session:

    >>> from {{ cookiecutter.__package_name }}.infrastructure import tasks
    >>> task_id = await tasks.enqueue_task("example_task", message="from the shell", steps=2)
    >>> await (await tasks.get_task_pool()).job(task_id).result(timeout_s=30)
"""

import os
import subprocess
import sys

from dotenv import dotenv_values

from .dev import SERVICE, SERVICES_FILE


def main() -> int:
    env = dict(os.environ)
    if SERVICES_FILE.exists():
        found = {key: value for key, value in dotenv_values(SERVICES_FILE).items() if value}
        env |= {key: value for key, value in found.items() if key not in os.environ}
        print(f"On the servers of `just dev` ({SERVICES_FILE}): {', '.join(sorted(found))}.")
    else:
        print(f"No {SERVICES_FILE}: `just dev` is not running here; the settings of .env apply.")
    print(f"Try: from {SERVICE}.infrastructure.tasks import enqueue_task, get_task_pool")
    sys.stdout.flush()
    return subprocess.call([sys.executable, "-m", "asyncio"], env=env)


if __name__ == "__main__":
    sys.exit(main())
