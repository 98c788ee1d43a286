"""Readiness: can this process serve requests right now?"""

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

Check = Callable[[], Awaitable[None]]
"""A dependency probe: returns when the dependency is usable, raises otherwise."""
WorkerProbe = Callable[[], Awaitable[bool]]
"""True while workers of a queue send heartbeats."""


@dataclass(frozen=True)
class Readiness:
    ready: bool
    checks: dict[str, str]


async def check_readiness(checks: Mapping[str, Check], *, timeout_s: float) -> Readiness:
    """Run every probe at once; each gets `timeout_s` seconds and reports "ok" or why not."""

    async def run(check: Check) -> str:
        try:
            await asyncio.wait_for(check(), timeout_s)
        except TimeoutError:
            return f"no answer within {timeout_s:g} s"
        except Exception as exc:  # any failure means "not ready", with its reason
            return str(exc) or type(exc).__name__
        return "ok"

    results = await asyncio.gather(*(run(check) for check in checks.values()))
    outcome = dict(zip(checks, results, strict=True))
    return Readiness(ready=all(result == "ok" for result in results), checks=outcome)


async def worker_heartbeats(probes: Mapping[str, WorkerProbe]) -> dict[str, str]:
    """For each queue: "alive", "no heartbeat", or "unknown" when the probe itself fails.
    Reported beside readiness, not part of it: an API without workers still takes tasks."""

    async def run(probe: WorkerProbe) -> str:
        try:
            return "alive" if await probe() else "no heartbeat"
        except Exception:  # the server is down: readiness reports why
            return "unknown"

    results = await asyncio.gather(*(run(probe) for probe in probes.values()))
    return dict(zip(probes, results, strict=True))
