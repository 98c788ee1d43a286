"""The leases of a worker's running tasks, renewed from a thread of their own.

A task that blocks its event loop (a synchronous HTTP call, CPU work in async code) would
stop a renewal made on that loop: its lease would run out while it still runs, and a second
worker would run it too. The keeper runs its own event loop and connection in a thread, which
goes on while the worker's loop is blocked, and renews each lease only while its try's token
still holds it and until the task's own timeout (plus one lease) has passed. A renewal left
unanswered for `timeout_s` is a failed one. A lease found
held by another try is lost: `on_lost` is called on the worker's loop, which stops the task.
"""

import asyncio
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from .redis import close_redis, describe
from .task_keys import LEASE_KEY_PREFIX
from .worker_scripts import SERVER_NOW_LUA

logger = logging.getLogger(__name__)
# The longest wait between two tries to reach Redis after a failed renewal.
MAX_BACKOFF_S = 1.0

# Renew the lease of each (id, token, lease set) triple after ARGV[1] (the lease, ms) whose
# lease key still holds that token: the key's time to live and its score in the lease set.
# Returns the ids whose lease another try holds now, or nobody.
RENEW_SCRIPT = (
    f"local LEASE = '{LEASE_KEY_PREFIX}'\n"
    + SERVER_NOW_LUA
    + """
local lease_ms, lost = tonumber(ARGV[1]), {}
for i = 2, #ARGV, 3 do
    local id, token, leases = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local lease = LEASE .. id
    if redis.call('GET', lease) == token then
        redis.call('PEXPIRE', lease, lease_ms)
        redis.call('ZADD', leases, 'XX', now + lease_ms, id)
    else
        lost[#lost + 1] = id
    end
end
return lost
"""
)


@dataclass
class Held:
    token: str
    leases_key: str
    # time.monotonic() after which the lease is left to run out.
    until: float


class LeaseKeeper:
    """Renews the leases it holds every third of a lease, in its own thread."""

    def __init__(
        self,
        open_redis: Callable[[], Redis],
        *,
        lease_ms: int,
        timeout_s: float,
        on_lost: Callable[[str, str], None],
    ) -> None:
        self._open_redis = open_redis
        self.lease_ms = lease_ms
        self.timeout_s = timeout_s
        self._on_lost = on_lost
        self._held: dict[str, Held] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def hold(self, job_id: str, token: str, leases_key: str, for_s: float) -> None:
        """Renew the lease of `job_id` under `token` for the next `for_s` seconds."""
        with self._lock:
            self._held[job_id] = Held(token, leases_key, time.monotonic() + for_s)

    def extend(self, job_id: str, for_s: float) -> None:
        """Renew the lease of `job_id` for `for_s` seconds from now (its task's own timeout)."""
        with self._lock:
            held = self._held.get(job_id)
            if held is not None:
                held.until = time.monotonic() + for_s

    def release(self, job_id: str, token: str) -> None:
        """Stop renewing the lease of `job_id`, if it is still held under `token`."""
        with self._lock:
            held = self._held.get(job_id)
            if held is not None and held.token == token:
                del self._held[job_id]

    def stop(self) -> None:
        """Stop renewing (once the tasks have ended) and wait for the thread."""
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        asyncio.run(self._keep())

    async def _keep(self) -> None:
        redis = self._open_redis()
        renew = redis.register_script(RENEW_SCRIPT)
        every_s = self.lease_ms / 3000
        delay_s, failing = every_s, False
        try:
            while not await asyncio.to_thread(self._stopping.wait, delay_s):
                try:
                    async with asyncio.timeout(self.timeout_s):
                        await self._renew(renew, redis)
                except Exception as exc:
                    # Whatever went wrong (the server gone or stalled, a failover's READONLY),
                    # try again soon, backing off: a lease outlives three missed renewals.
                    if not failing:
                        logger.warning(
                            "could not renew the leases of running tasks: %s", describe(exc)
                        )
                    delay_s = min(2 * delay_s, MAX_BACKOFF_S, every_s) if failing else 0.05
                    failing = True
                    continue
                if failing:
                    logger.info("renewing the leases of running tasks again")
                failing, delay_s = False, every_s
        finally:
            await close_redis(redis)

    async def _renew(self, renew: AsyncScript, redis: Redis) -> None:
        now = time.monotonic()
        with self._lock:
            for job_id, held in list(self._held.items()):
                if held.until < now:
                    logger.warning("%s ran past its timeout: its lease is left to run out", job_id)
                    del self._held[job_id]
            held_now = dict(self._held)
        if not held_now:
            return
        args: list[str | int] = [self.lease_ms]
        for job_id, held in held_now.items():
            args += [job_id, held.token, held.leases_key]
        lost = await renew(args=args, client=redis)
        for raw in lost:
            job_id = raw.decode() if isinstance(raw, bytes) else str(raw)
            self._on_lost(job_id, held_now[job_id].token)
