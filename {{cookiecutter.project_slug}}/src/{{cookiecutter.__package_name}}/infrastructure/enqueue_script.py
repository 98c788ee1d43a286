"""The enqueue script: whether a task is let in (its submitter's rate, a free id, room on its
queue) and its enqueueing, in one round trip; and the refusals it answers."""

from dataclasses import dataclass

# Submission counts of each submitter's current window (see SubmissionRate).
RATE_KEY_PREFIX = "task:rate:"

# Enqueue as arq does (the job, then its id on the queue, unless the id is taken by a job or a
# result), and wake the workers of the queue, atomically. With a rate (ARGV[7] > 0), KEYS[4]
# counts the submissions of a window of ARGV[8] ms, from the first: past ARGV[7] of them, the
# answer is -2 and the window's remaining ms. With a maximum depth (ARGV[6] > 0), a queue that
# already holds that many tasks, waiting (KEYS[3]) or running (its lease set, KEYS[6]), takes
# no more. Each task let in counts for its name (ARGV[9]) in KEYS[5], for /metrics. Sent again
# after a lost reply, it finds its own payload (its enqueue time to the ms, its arguments, its
# request's id) in the job and answers 1 again, counting nothing twice. (A task that ran to its
# end before the call was sent again reads as taken: its job is gone, its result kept.)
ENQUEUE_SCRIPT = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return 1
end
local rate = tonumber(ARGV[7])
if rate > 0 then
    local count = redis.call('INCR', KEYS[4])
    if count == 1 then
        redis.call('PEXPIRE', KEYS[4], ARGV[8])
    end
    if count > rate then
        return {-2, redis.call('PTTL', KEYS[4])}
    end
end
if redis.call('EXISTS', KEYS[1], KEYS[2]) > 0 then
    return 0
end
local max_depth = tonumber(ARGV[6])
if max_depth > 0 and redis.call('ZCARD', KEYS[3]) + redis.call('ZCARD', KEYS[6]) >= max_depth
then
    return -1
end
redis.call('PSETEX', KEYS[1], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
redis.call('PUBLISH', ARGV[5], '')
redis.call('HINCRBY', KEYS[5], ARGV[9], 1)
return 1
"""


@dataclass(frozen=True)
class SubmissionRate:
    """At most `limit` submissions per `window_s` for `submitter`."""

    submitter: str
    limit: int
    window_s: float


class RateLimitedError(Exception):
    """A submitter went past its SubmissionRate; its window ends in `retry_after_s`."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"Too many submissions; retry in {retry_after_s} s.")
        self.retry_after_s = retry_after_s


class QueueFullError(Exception):
    """The queue already holds the most tasks the caller allowed (`_max_depth`)."""

    def __init__(self, queue: str, max_depth: int) -> None:
        super().__init__(f"The queue {queue!r} already holds {max_depth} tasks.")
