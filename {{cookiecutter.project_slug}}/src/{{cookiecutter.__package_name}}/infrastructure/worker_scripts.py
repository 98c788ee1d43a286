"""The scripts a worker changes its tasks' state with, each one atomic and on Redis' clock:
the claim of the next due tasks, and the end of a try."""

from arq.constants import retry_key_prefix

from .events import EVENTS_CHANNEL_PREFIX
from .task_history import TIMELINE_MAX, TIMELINE_PREFIX
from .task_keys import ENDED_TRY_TTL_MS, LEASE_KEY_PREFIX
from .task_metrics import pickup_lua
from .task_state import PROGRESS_KEY_PREFIX

SERVER_NOW_LUA = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
"""

# Claim up to ARGV[1] of the due tasks of the queue (KEYS[1]) for a lease of ARGV[2] ms each.
# First, tasks whose lease ran out (their worker died or stopped renewing) go back to the
# queue, due at once: up to ARGV[5] of them, the longest lapsed first. Then each claimed task
# leaves the queue for its lease set (KEYS[2]) and gets its try's token (ARGV[4] .. ':' .. n)
# in its lease key; its progress starts over, its followers hear that it started, the console
# lists it as running (KEYS[4]) and keeps the start in its timeline (for ARGV[3] ms), and its
# wait from due to start is counted (KEYS[3]). Returns id, due score, try and token of each,
# and keeps that reply in KEYS[5] for the lease: sent again (its reply lost), the claim
# answers the same.
CLAIM_SCRIPT = (
    f"local LEASE, RETRY, PROGRESS = '{LEASE_KEY_PREFIX}', '{retry_key_prefix}', "
    f"'{PROGRESS_KEY_PREFIX}'\n"
    f"local TIMELINE, EVENTS, TIMELINE_MAX = '{TIMELINE_PREFIX}', '{EVENTS_CHANNEL_PREFIX}', "
    f"{TIMELINE_MAX}\n"
    + pickup_lua()
    + SERVER_NOW_LUA
    + """
local queue, leases, lease_ms = KEYS[1], KEYS[2], tonumber(ARGV[2])
local replay = redis.call('GET', KEYS[5])
if replay then
    return cjson.decode(replay)
end
local lapsed = redis.call('ZRANGE', leases, '-inf', now, 'BYSCORE', 'LIMIT', 0, ARGV[5])
for _, id in ipairs(lapsed) do
    local left = redis.call('PTTL', LEASE .. id)
    if left == -2 then
        redis.call('ZREM', leases, id)
        redis.call('ZADD', queue, now, id)
    else
        redis.call('ZADD', leases, now + math.max(left, lease_ms), id)
    end
end
local claimed = {}
local due = redis.call('ZRANGE', queue, '-inf', now, 'BYSCORE', 'LIMIT', 0, ARGV[1])
for n, id in ipairs(due) do
    local lease = LEASE .. id
    if redis.call('EXISTS', lease) == 0 then
        local score = redis.call('ZSCORE', queue, id)
        local token = ARGV[4] .. ':' .. n
        redis.call('PSETEX', lease, lease_ms, token)
        redis.call('ZREM', queue, id)
        redis.call('ZADD', leases, now + lease_ms, id)
        redis.call('DEL', PROGRESS .. id)
        local try = tonumber(redis.call('GET', RETRY .. id) or '0') + 1
        local started = cjson.encode({
            task_id = id, status = 'in_progress', progress = cjson.null, event = 'started',
            data = {try = try}, ts = now / 1000
        })
        redis.call('PUBLISH', EVENTS .. id, started)
        redis.call('ZADD', KEYS[4], now, id)
        local timeline = TIMELINE .. id
        redis.call('RPUSH', timeline, started)
        redis.call('LTRIM', timeline, -TIMELINE_MAX, -1)
        redis.call('PEXPIRE', timeline, ARGV[3])
        count_pickup(KEYS[3], queue, now - tonumber(score))
        claimed[#claimed + 1] = id
        claimed[#claimed + 1] = score
        claimed[#claimed + 1] = try
        claimed[#claimed + 1] = token
    end
end
if #claimed > 0 then
    redis.call('SET', KEYS[5], cjson.encode(claimed), 'PX', lease_ms)
end
return claimed
"""
)

# End a try of task ARGV[2], if its lease (KEYS[1]) still holds this try's token (ARGV[1]):
# out of the lease set (KEYS[3]); the lease key kept ARGV[7] ms (a cron run's, so that no
# worker starts the same run again) or deleted. Finished (ARGV[3] = '1'): the result (ARGV[4],
# if any) kept ARGV[5] ms (0: for ever), the job, its tries and any abort request gone, off the
# queue (KEYS[2]). Else back on the queue at score ARGV[6] ('' : due at once). Returns 1; sent
# again after a lost reply, 1 again (KEYS[8] notes the token ended); 0 when another try holds
# the lease: this one changes nothing.
FINISH_SCRIPT = (
    f"local ENDED_TTL_MS = {ENDED_TRY_TTL_MS}\n"
    + SERVER_NOW_LUA
    + """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return redis.call('EXISTS', KEYS[8])
end
redis.call('ZREM', KEYS[3], ARGV[2])
local keep_ms = tonumber(ARGV[7])
if keep_ms > 0 then
    redis.call('SET', KEYS[1], 'ended', 'PX', keep_ms)
else
    redis.call('DEL', KEYS[1])
end
if ARGV[3] == '1' then
    if ARGV[4] ~= '' then
        if tonumber(ARGV[5]) > 0 then
            redis.call('SET', KEYS[4], ARGV[4], 'PX', ARGV[5])
        else
            redis.call('SET', KEYS[4], ARGV[4])
        end
    end
    redis.call('DEL', KEYS[5], KEYS[6])
    redis.call('ZREM', KEYS[7], ARGV[2])
    redis.call('ZREM', KEYS[2], ARGV[2])
else
    local score = now
    if ARGV[6] ~= '' then
        score = tonumber(ARGV[6])
    end
    redis.call('ZADD', KEYS[2], score, ARGV[2])
end
redis.call('SET', KEYS[8], '1', 'PX', ENDED_TTL_MS)
return 1
"""
)
