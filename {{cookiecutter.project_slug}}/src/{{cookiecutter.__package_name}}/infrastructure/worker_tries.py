"""One worker's tries: claimed under fenced leases, renewed by the lease keeper, ended in one
script each that changes nothing once another try holds the lease."""

import asyncio
import contextvars
import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass

from arq.constants import abort_jobs_ss, job_key_prefix, result_key_prefix, retry_key_prefix
from redis.asyncio import Redis

from .lease_keeper import LeaseKeeper
from .task_history import RUNNING_KEY
from .task_keys import CLAIM_REPLY_PREFIX, ENDED_TRY_PREFIX, LEASE_KEY_PREFIX, leases_key
from .task_metrics import PICKUPS_KEY
from .worker_scripts import CLAIM_SCRIPT, FINISH_SCRIPT

logger = logging.getLogger(__name__)
# At most this many lapsed leases (of crashed workers) go back to the queue per claim.
SWEEP_MAX = 100


@dataclass(frozen=True)
class Claim:
    """A worker's hold on one try: the task, the token its lease holds, when it was due, and
    which try of the task it is."""

    job_id: str
    token: str
    score: int
    job_try: int


# The try that runs in this asyncio task: its payload tells its timeout, its end its token.
CURRENT_TRY: contextvars.ContextVar[Claim | None] = contextvars.ContextVar(
    "current_try", default=None
)


def claim_keys(queue_name: str, prefix: str) -> list[str]:
    """The keys CLAIM_SCRIPT reads and writes for the claim of token prefix `prefix`."""
    return [
        queue_name,
        leases_key(queue_name),
        PICKUPS_KEY,
        RUNNING_KEY,
        CLAIM_REPLY_PREFIX + prefix,
    ]


class Tries:
    """The tries a worker runs, keyed by token: a worker whose lease lapsed (its renewals
    starved) may claim the same task again while its first try still runs here; that try
    is then stopped, and nothing of it is taken for the new one.

    `cancel(job_id)` stops the running function of a task; it is called on the worker's loop
    when another try took the lease."""

    def __init__(
        self,
        pool: Redis,
        queue_name: str,
        *,
        worker_id: str,
        lease_ms: int,
        history_keep_ms: int,
        lease_redis: Callable[[], Redis],
        redis_timeout_s: float,
        cancel: Callable[[str], None],
    ) -> None:
        self._pool = pool
        self._queue_name = queue_name
        self._leases_key = leases_key(queue_name)
        self._worker_id = worker_id
        self._lease_ms = lease_ms
        self._history_keep_ms = history_keep_ms
        self._cancel = cancel
        self._claim = pool.register_script(CLAIM_SCRIPT)
        self._finish = pool.register_script(FINISH_SCRIPT)
        self._numbers = itertools.count()
        # The newest try of each task this worker runs; the tokens of tries fenced out, and of
        # those whose end is being written: FINISH_SCRIPT decides whether they still held
        # their lease (the keeper's last renewal may find it gone, deleted by that end).
        self._newest: dict[str, Claim] = {}
        self._fenced_out: set[str] = set()
        self._ending: set[str] = set()
        self._keeper = LeaseKeeper(
            lease_redis, lease_ms=lease_ms, timeout_s=redis_timeout_s, on_lost=self._lost
        )
        self._loop = asyncio.get_running_loop()
        self._keeper.start()

    async def claim(self, free_slots: int, hold_for_s: float) -> list[tuple[Claim, bool]]:
        """Claim up to `free_slots` due tasks, each renewed for `hold_for_s` seconds at
        first; with each claim, whether an earlier try of the task runs here (now stopped)."""
        prefix = f"{self._worker_id}:{next(self._numbers)}"
        reply = await self._claim(
            keys=claim_keys(self._queue_name, prefix),
            args=[free_slots, self._lease_ms, self._history_keep_ms, prefix, SWEEP_MAX],
            client=self._pool,
        )
        claims = []
        for i in range(0, len(reply), 4):
            claim = Claim(
                job_id=reply[i].decode(),
                score=int(float(reply[i + 1])),
                job_try=int(reply[i + 2]),
                token=reply[i + 3].decode(),
            )
            earlier = self._newest.get(claim.job_id)
            if earlier is not None:
                self.stop(earlier, "its lease ran out while it ran here, and it was claimed again")
            self._newest[claim.job_id] = claim
            self._keeper.hold(claim.job_id, claim.token, self._leases_key, for_s=hold_for_s)
            claims.append((claim, earlier is not None))
        return claims

    def extend(self, claim: Claim, for_s: float) -> None:
        self._keeper.extend(claim.job_id, for_s=for_s)

    def fenced_out(self, claim: Claim | None) -> bool:
        return claim is None or claim.token in self._fenced_out

    def stop(self, claim: Claim, why: str) -> None:
        """Stop a try whose lease another try holds: its end changes nothing."""
        if claim.token in self._fenced_out or claim.token in self._ending:
            return
        self._fenced_out.add(claim.token)
        logger.error("%s lost its lease (%s), so this try is stopped", claim.job_id, why)
        self._cancel(claim.job_id)

    async def end(
        self,
        claim: Claim,
        *,
        finish: bool,
        result_data: bytes | None,
        result_ms: int,
        next_score: int | str,
        keep_lease_ms: int,
    ) -> None:
        """End a try (finished, or back on the queue at `next_score`), if it still holds its
        task's lease (FINISH_SCRIPT)."""
        if self.fenced_out(claim):
            return
        job_id = claim.job_id
        self._ending.add(claim.token)
        ended = await self._finish(
            keys=[
                LEASE_KEY_PREFIX + job_id,
                self._queue_name,
                self._leases_key,
                result_key_prefix + job_id,
                retry_key_prefix + job_id,
                job_key_prefix + job_id,
                abort_jobs_ss,
                ENDED_TRY_PREFIX + claim.token,
            ],
            args=[
                claim.token,
                job_id,
                "1" if finish else "0",
                result_data or b"",
                result_ms,
                next_score,
                keep_lease_ms,
            ],
            client=self._pool,
        )
        if ended:
            self._keeper.release(job_id, claim.token)
        else:
            self._fenced_out.add(claim.token)
            logger.error(
                "%s: another try holds its lease, so the end of this one changes nothing",
                job_id,
            )

    def forget(self, claim: Claim) -> None:
        """The try has ended: its lease is no longer renewed."""
        self._keeper.release(claim.job_id, claim.token)
        if self._newest.get(claim.job_id) is claim:
            del self._newest[claim.job_id]
        self._fenced_out.discard(claim.token)
        self._ending.discard(claim.token)

    async def close(self) -> None:
        """Stop renewing (once the tries have ended) and wait for the keeper's thread."""
        await asyncio.to_thread(self._keeper.stop)

    def _lost(self, job_id: str, token: str) -> None:
        """Called by the lease keeper's thread: another try holds the lease of `job_id`."""
        self._loop.call_soon_threadsafe(self._stop_if_newest, job_id, token)

    def _stop_if_newest(self, job_id: str, token: str) -> None:
        claim = self._newest.get(job_id)
        if claim is None or claim.token != token:
            return  # the try ended meanwhile, or was stopped when claimed again here
        self.stop(
            claim,
            "its event loop was blocked past WORKER_LEASE_S, or Redis lost the lease: "
            "another worker may run it now",
        )
