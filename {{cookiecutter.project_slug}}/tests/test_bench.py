"""`just bench` end to end with tiny counts, so that it keeps working. Its numbers are read by
people (docs/benchmarks.md), never asserted: on a loaded machine they mean nothing."""

import os
import subprocess
import sys

import pytest

# Starts processes or waits out faults for seconds: `just test -m "not slow"` leaves it out.
pytestmark = pytest.mark.slow
BENCH = [sys.executable, "-m", "{{ cookiecutter.__package_name }}.devtools.bench"]


def test_bench_runs_every_measure_and_prints_its_table() -> None:
    """It starts its own server, API, bare app and workers, and prints every row."""
    env = {**os.environ, "WORKER_LEASE_S": "1"}  # a short lease: the recovery takes ~1 s
    env.pop("REDIS_URL", None)
{%- if cookiecutter.__database == "postgres" %}
    env.pop("DATABASE_URL", None)
{%- endif %}
    counts = ["--requests", "20", "--tasks", "20", "--pickups", "5", "--recoveries", "1"]
    counts += ["--console-tasks", "120", "--console-dead-letters", "30", "--scaling", "1,2"]
    counts += ["--fleet", "1"]
    done = subprocess.run(
        [*BENCH, *counts], env=env, capture_output=True, text=True, timeout=240, check=False
    )
    assert done.returncode == 0, done.stderr
    tables = done.stdout.split("\n\n")
    rows = [line for line in tables[1].splitlines() if line.startswith("| ")]
    measures = [row.split(" | ")[0].removeprefix("| ") for row in rows[1:]]
    for clients in ("1 client", "4 clients", "50 clients"):
        for measure in ("requests/s", "p50 ms", "p99 ms"):
            assert f"`POST` enqueue, {clients}: {measure}" in measures
    for measure in ("requests/s", "p50 ms", "p99 ms"):
        assert f"`POST` enqueue, 50 clients, 2 API processes: {measure}" in measures
    assert "worker, no-op tasks/s (vs arq defaults)" in measures
    assert "pickup p50 ms, idle worker (vs arq, poll_delay 0.01)" in measures
    assert "recovery after SIGKILL mid-task, s" in measures
    fleet = "fleet: most of 30 tasks of 3 s running at once, 1 worker process x 20 slots"
    assert f"{fleet} (vs arq, poll_delay 0.01)" in measures
    assert "worker scaling: no-op tasks/s, 2 worker processes (vs 1)" in measures
    assert "worker scaling: Redis CPU ms per 1,000 tasks, 1 worker process" in measures
{%- if cookiecutter.__database == "postgres" %}
    assert "pickup p99 ms, enqueue on commit (vs the service's direct enqueue)" in measures
{%- endif %}
    assert not any("errors" in measure or "failed" in measure for measure in measures), rows
    for row in rows[2:]:
        generated = row.split(" | ")[1]
        assert float(generated.split(",")[0].replace(",", "")) > 0, row
    console = "\n\n".join(tables[2:])
    assert console.startswith("Operator console: 120 finished tasks, 30 dead letters")
    lines = [line for line in console.splitlines() if line.startswith("| ")]
    pages = [line.split(" | ")[0].removeprefix("| ") for line in lines[1:]]
    assert "overview" in pages
    assert "complete, page 3 (the last)" in pages
    assert "dead letters of one task name" in pages


@pytest.mark.parametrize("argument", ["--requests", "--tasks", "--pickups"])
def test_bench_refuses_a_count_below_one(argument: str) -> None:
    """It says which count is wrong and starts nothing."""
    done = subprocess.run(
        [*BENCH, argument, "0"], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 2
    assert f"{argument} must be at least 1" in done.stderr
