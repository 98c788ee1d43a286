"""Where the task engine keeps a queue's running tasks in Redis, beside the keys arq defines.

A task waits in its queue's sorted set (arq's layout: scored by when it is due). A worker that
claims it moves it to the queue's lease set, scored by when its lease runs out, and writes a
token of that try into arq's in-progress key. So the queue holds only tasks that wait, and a
claim takes the first due one, however many run.
"""

from arq.constants import in_progress_key_prefix

LEASES_SUFFIX = ":leases"
# Written when a try ends, so that the end sent again after a lost reply is known as done.
ENDED_TRY_PREFIX = "task:ended:"
ENDED_TRY_TTL_MS = 60_000
# Written when a dead letter is retried (its record's digest), for the same reason.
LETTER_RETRIED_PREFIX = "task:letter-retried:"
LETTER_RETRIED_TTL_MS = 60_000
# A claim's reply, kept for the claim's lease: the claim sent again after a lost reply gets
# the same tasks back instead of claiming others (those would run only once their lease lapsed).
CLAIM_REPLY_PREFIX = "task:claimed:"
# The in-progress key of a task: its lease, holding the token of the try that holds it.
LEASE_KEY_PREFIX = in_progress_key_prefix


def leases_key(queue: str) -> str:
    """The tasks of `queue` running now, scored by when their lease runs out (epoch ms)."""
    return queue + LEASES_SUFFIX
