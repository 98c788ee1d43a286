"""The worker process:

    python -m {{ cookiecutter.__package_name }}.worker [--queue slow] [--reload] [--verbose]

The worker of the default queue also runs the cron jobs. `--check` exits 0 only while a worker
of the queue sends heartbeats; `--check-self`, only while a worker of the queue on this host
(this pod, this container) does: the containers' liveness check. SIGINT or SIGTERM stops it
after its running tasks end (WORKER_JOB_COMPLETION_WAIT_S at most).
"""

import argparse
import sys
from pathlib import Path

# The engine is imported in the functions, not here: with --reload, each worker process first
# imports this module again, and must be able to stop while it starts (run_reloaded).
PACKAGE_DIR = Path(__file__).resolve().parent


def run_reloaded(queue: str, *, burst: bool, verbose: bool) -> None:
    """A worker that watchfiles restarts on each change: one that comes while it is still
    starting stops it as quietly as one that comes while it runs."""
    try:
        from .infrastructure.tasks import run_worker

        run_worker(queue, burst=burst, verbose=verbose)
    except KeyboardInterrupt:
        return


def main(argv: list[str] | None = None) -> int:
    from .infrastructure.tasks import SETTINGS_BY_QUEUE, check_this_host, check_worker, run_worker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--queue", choices=sorted(SETTINGS_BY_QUEUE), default="default")
    parser.add_argument("--check", action="store_true", help="exit 0 only if a worker is alive")
    parser.add_argument(
        "--check-self",
        action="store_true",
        help="exit 0 only if a worker on this host (pod, container) is alive",
    )
    parser.add_argument("--burst", action="store_true", help="exit once the queue is empty")
    parser.add_argument("--reload", action="store_true", help="restart on code changes")
    parser.add_argument("--verbose", action="store_true", help="log every task")
    args = parser.parse_args(argv)
    if args.check:
        return check_worker(args.queue)
    if args.check_self:
        return check_this_host(args.queue)
    if args.reload:
        from watchfiles import run_process  # installed with uvicorn[standard]; dev only

        run_process(
            PACKAGE_DIR,
            target=run_reloaded,
            args=(args.queue,),
            kwargs={"burst": args.burst, "verbose": args.verbose},
        )
        return 0
    run_worker(args.queue, burst=args.burst, verbose=args.verbose)
    return 0


if __name__ == "__main__":
    sys.exit(main())
