"""`just bench`: how fast the service is, side by side with bare arq, in one run.

Starts an embedded server, the API (one uvicorn process), a bare FastAPI app whose one
endpoint calls arq's `enqueue_job`, and workers in their own processes, all on 127.0.0.1,
then prints one Markdown table; docs/benchmarks.md explains each line. The HTTP load and the
bare endpoint are in bench_http.py, the workers and what is measured through them in
bench_workers.py, the console's pages in bench_console.py, worker scaling in bench_scaling.py.

    just bench [--requests N] [--tasks N] [--pickups N] [--recoveries N] [--scaling 1,2,4]
               [--console-tasks N] [--console-dead-letters N]

(`python -m {{ cookiecutter.__package_name }}.devtools.bench` without just.)

These are the only modules besides the task layer that import arq: bare arq is the baseline.
"""

import argparse
import asyncio
import os
import platform
import sys
from dataclasses import dataclass

{% if cookiecutter.__database == "postgres" -%}
from alembic import command
{% endif -%}
from arq.connections import RedisSettings, create_pool

from ..infrastructure.queue import open_task_queue
{%- if cookiecutter.__database == "postgres" %}
from ..migrate import alembic_config
{%- endif %}
from ..settings import Settings
from .bench_console import console_table, measure_console
from .bench_fleet import BASELINE, FLEET_SLOTS, HOLD_S, Fleet, measure_fleet
from .bench_http import EnqueueResults, Latencies, bench_enqueue
from .bench_scaling import WORKER_COUNTS, Scaling, measure_scaling
{%- if cookiecutter.__database == "postgres" %}
from .bench_workers import (
    ARQ_WORKERS,
    GENERATED,
    Queues,
    drain,
    measure_commit_pickups,
    measure_pickups,
    measure_recovery,
)
from .embedded_postgres import EmbeddedPostgres
{%- else %}
from .bench_workers import ARQ_WORKERS, GENERATED, Queues, drain, measure_pickups, measure_recovery
{%- endif %}
from .embedded_redis import EmbeddedRedis


@dataclass
class Results:
    enqueue: EnqueueResults
    throughput: dict[str, Latencies]
    pickups: dict[str, Latencies]
    recoveries: list[float]
    scaling: list[Scaling]
    fleet: Fleet
{%- if cookiecutter.__database == "postgres" %}
    commit_pickups: Latencies | None = None
{%- endif %}


{% if cookiecutter.__database == "postgres" -%}
async def run(redis_url: str, database_url: str, args: argparse.Namespace) -> Results:
    env = {**os.environ, "REDIS_URL": redis_url, "DATABASE_URL": database_url}
    settings = Settings(redis_url=redis_url, database_url=database_url)
{%- else -%}
async def run(redis_url: str, args: argparse.Namespace) -> Results:
    env = {**os.environ, "REDIS_URL": redis_url}
    settings = Settings(redis_url=redis_url)
{%- endif %}
    queue = Queues(
        open_task_queue(settings), await create_pool(RedisSettings.from_dsn(redis_url)), settings
    )
    try:
        print(f"enqueue over HTTP: {args.requests} requests per run...", file=sys.stderr)
        enqueue = await bench_enqueue(env, args.requests)
        await queue.flush()
        throughput: dict[str, Latencies] = {}
        for kind in (GENERATED, *ARQ_WORKERS):
            print(f"worker throughput ({kind}): {args.tasks} tasks...", file=sys.stderr)
            throughput[kind] = await drain(kind, env, args.tasks, queue)
            await queue.flush()
        pickups: dict[str, Latencies] = {}
        for kind in (GENERATED, *ARQ_WORKERS):
            count = args.pickups if ARQ_WORKERS.get(kind, 0) < 0.1 else max(3, args.pickups // 5)
            print(f"pickup latency ({kind}): {count} tasks...", file=sys.stderr)
            pickups[kind] = await measure_pickups(kind, env, count, queue)
            await queue.flush()
{%- if cookiecutter.__database == "postgres" %}
        print(f"pickup latency, enqueue on commit: {args.pickups} tasks...", file=sys.stderr)
        commit_pickups = await measure_commit_pickups(env, args.pickups, queue)
        await queue.flush()
{%- endif %}
        recoveries = []
        for _ in range(args.recoveries):
            print("recovery after SIGKILL...", file=sys.stderr)
            recoveries.append(await measure_recovery(env, queue))
        scaling = await measure_scaling(env, queue.ours, args.tasks, args.scaling)
        fleet = await measure_fleet(env, queue, args.fleet)
{%- if cookiecutter.__database == "postgres" %}
        return Results(enqueue, throughput, pickups, recoveries, scaling, fleet, commit_pickups)
{%- else %}
        return Results(enqueue, throughput, pickups, recoveries, scaling, fleet)
{%- endif %}
    finally:
        await queue.ours.close()
        await queue.bare.aclose()


def ratio(ours: float, baseline: float) -> str:
    return f"{ours / baseline:.2f}x"


def table(results: Results, settings: Settings) -> str:
    rows = [
        "| measure | generated service | bare arq | ratio |",
        "|---|---|---|---|",
    ]
    for (api_processes, clients), (ours, bare) in results.enqueue.items():
        label = f"`POST` enqueue, {clients} client{'s' if clients > 1 else ''}"
        if api_processes > 1:
            label += f", {api_processes} API processes"
        rows.append(
            f"| {label}: requests/s | {ours.per_s:,.0f} | {bare.per_s:,.0f} "
            f"| {ratio(ours.per_s, bare.per_s)} |"
        )
        for percent in (50, 99):
            mine, theirs = ours.percentile_ms(percent), bare.percentile_ms(percent)
            rows.append(
                f"| {label}: p{percent} ms | {mine:.2f} | {theirs:.2f} | {ratio(mine, theirs)} |"
            )
        if ours.errors or bare.errors:
            rows.append(f"| {label}: errors | {ours.errors} | {bare.errors} | |")
    ours_tput = results.throughput[GENERATED]
    for kind in ARQ_WORKERS:
        theirs_tput = results.throughput[kind]
        rows.append(
            f"| worker, no-op tasks/s (vs {kind}) | {ours_tput.per_s:,.0f} "
            f"| {theirs_tput.per_s:,.0f} | {ratio(ours_tput.per_s, theirs_tput.per_s)} |"
        )
    ours_pick = results.pickups[GENERATED]
    for kind in ARQ_WORKERS:
        theirs_pick = results.pickups[kind]
        for percent in (50, 99):
            mine, theirs = ours_pick.percentile_ms(percent), theirs_pick.percentile_ms(percent)
            rows.append(
                f"| pickup p{percent} ms, idle worker (vs {kind}) | {mine:.2f} | {theirs:.2f} "
                f"| {ratio(mine, theirs)} |"
            )
{%- if cookiecutter.__database == "postgres" %}
    if results.commit_pickups is not None:
        for percent in (50, 99):
            mine = results.commit_pickups.percentile_ms(percent)
            direct = ours_pick.percentile_ms(percent)
            rows.append(
                f"| pickup p{percent} ms, enqueue on commit (vs the service's direct enqueue) "
                f"| {mine:.2f} | {direct:.2f} | {ratio(mine, direct)} |"
            )
{%- endif %}
    one = results.scaling[0]
    for scaled in results.scaling[1:]:
        label = f"{scaled.workers} worker processes (vs {one.workers})"
        rows.append(
            f"| worker scaling: no-op tasks/s, {label} | {scaled.per_s:,.0f} | {one.per_s:,.0f} "
            f"| {ratio(scaled.per_s, one.per_s)} |"
        )
    for scaled in results.scaling:
        rows.append(
            f"| worker scaling: Redis CPU ms per 1,000 tasks, {scaled.workers} worker "
            f"process{'es' if scaled.workers > 1 else ''} | {scaled.redis_cpu_ms_per_1k:.0f} | | |"
        )
    fleet = results.fleet
    ours_most, arq_most = fleet.most_at_once[GENERATED], fleet.most_at_once[BASELINE]
    rows.append(
        f"| fleet: most of {fleet.tasks} tasks of {HOLD_S:g} s running at once, "
        f"{fleet.processes} worker process{'es' if fleet.processes > 1 else ''} x "
        f"{FLEET_SLOTS} slots (vs {BASELINE}) | {ours_most} | {arq_most} "
        f"| {ratio(ours_most, arq_most)} |"
    )
    if results.recoveries:
        arq_s = settings.worker_job_timeout_s + 10
        measured = ", ".join(f"{seconds:.1f}" for seconds in results.recoveries)
        rows.append(
            f"| recovery after SIGKILL mid-task, s | {measured} | {arq_s:.0f} (computed) "
            f"| {ratio(max(results.recoveries), arq_s)} |"
        )
    failed = {kind: tput.errors for kind, tput in results.throughput.items() if tput.errors}
    failed |= {f"{s.workers} workers": s.failed for s in results.scaling if s.failed}
    if failed:
        rows.append(f"| tasks that failed | {failed} | | |")
    return "\n".join(rows)


def worker_counts(text: str) -> tuple[int, ...]:
    counts = tuple(int(count) for count in text.split(","))
    if len(counts) < 2 or min(counts) < 1:
        raise argparse.ArgumentTypeError("give two counts or more, each at least 1: 1,2,4")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--requests", type=int, default=20_000, help="per concurrency and app")
    parser.add_argument("--tasks", type=int, default=5_000, help="no-op tasks per worker")
    parser.add_argument("--pickups", type=int, default=200, help="tasks timed one at a time")
    parser.add_argument("--recoveries", type=int, default=3, help="workers killed mid-task")
    parser.add_argument(
        "--console-tasks", type=int, default=50_000, help="finished tasks the console lists"
    )
    parser.add_argument("--console-dead-letters", type=int, default=10_000, help="and dead letters")
    parser.add_argument(
        "--scaling",
        type=worker_counts,
        default=WORKER_COUNTS,
        help="worker processes to compare, comma-separated (default: 1,2,4)",
    )
    parser.add_argument(
        "--fleet", type=int, default=6, help=f"worker processes of {FLEET_SLOTS} slots in the fleet"
    )
    args = parser.parse_args(argv)
    names = ("requests", "tasks", "pickups", "console_tasks", "console_dead_letters", "fleet")
    for name in names:
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
{%- if cookiecutter.__database == "postgres" %}
    with EmbeddedRedis() as server, EmbeddedPostgres() as database:
        command.upgrade(alembic_config(database.url), "head")
        results = asyncio.run(run(server.url, database.url, args))
        env = {**os.environ, "REDIS_URL": server.url, "DATABASE_URL": database.url}
        console = measure_console(env, args.console_tasks, args.console_dead_letters)
{%- else %}
    with EmbeddedRedis() as server:
        results = asyncio.run(run(server.url, args))
        env = {**os.environ, "REDIS_URL": server.url}
        console = measure_console(env, args.console_tasks, args.console_dead_letters)
{%- endif %}
    settings = Settings(redis_url=server.url)
    print(
        f"{os.cpu_count()} cores, {platform.python_implementation()} {platform.python_version()}, "
        f"one uvicorn process per app unless a line says more, worker max_jobs "
        f"{settings.worker_max_jobs}; load: asyncio HTTP/1.1 client, keep-alive; "
        f"{args.requests} requests per run, {args.tasks} tasks, {args.pickups} pickups.\n"
    )
    print(table(results, settings))
    print()
    print(console_table(console))
    return 0


if __name__ == "__main__":
    sys.exit(main())
