"""The scripts the queue client changes a task's state with, each one atomic: a crash can
fall before or after one, never inside.

The dead-letter retry: taking the letter and enqueueing in two steps lost the task when a crash
fell between them, or deleted the result of a newer task that had taken the id meanwhile. The
abort of a waiting task: taking it off its queue and writing its result in two steps left a
task that read "queued" for ever.
"""

from .task_keys import LETTER_RETRIED_TTL_MS

# KEYS: [1] the letter's record, [2] the index of all letters, [3] that of its task name,
# [4] the job, [5] its result, [6] its progress, [7] its queue, [8] the note that this letter
# was retried, [9] the submission counts. ARGV: [1] the task id, [2] the record as read,
# [3] the job payload, [4] the job's time to live (ms), [5] the queue's wake channel, [6] the
# task name. Returns 1 when the task is queued again (also when sent again after a lost reply:
# the note holds the record's digest), 0 when the letter is gone or has changed, -1 when
# another task holds the id now (queued, running, or completed): the letter stays.
RETRY_LETTER_SCRIPT = (
    f"local NOTE_TTL_MS = {LETTER_RETRIED_TTL_MS}\n"
    + """
local digest = redis.sha1hex(ARGV[2])
if redis.call('GET', KEYS[1]) ~= ARGV[2] then
    if redis.call('GET', KEYS[8]) == digest then
        return 1
    end
    return 0
end
if redis.call('EXISTS', KEYS[4]) == 1 then
    return -1
end
local result = redis.call('GET', KEYS[5])
if result then
    local ok, decoded = pcall(cjson.decode, result)
    if ok and type(decoded) == 'table' and decoded['s'] == true then
        return -1
    end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[1], KEYS[5], KEYS[6])
redis.call('SET', KEYS[4], ARGV[3], 'PX', ARGV[4])
redis.call('ZADD', KEYS[7], now, ARGV[1])
redis.call('PUBLISH', ARGV[5], '')
redis.call('HINCRBY', KEYS[9], ARGV[6], 1)
redis.call('SET', KEYS[8], digest, 'PX', NOTE_TTL_MS)
return 1
"""
)

# Abort task ARGV[1]. KEYS: [1] its lease, [2] its job, [3] its result, [4] its tries, [5] the
# abort requests, then the queues it may wait on. ARGV: [2] the job payload as read, [3] the
# result of an abort before it started, [4] how long that result is kept (ms), then the wake
# channels of the queues. A waiting task (no lease, its payload unchanged) leaves its queue
# and gets that result: "aborted" (also when sent again after a lost reply). A running one is
# asked to stop (its worker cancels it on its next pass): "aborting". "changed": the payload
# is not the one read (read it again).
ABORT_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 0 then
    local job = redis.call('GET', KEYS[2])
    if job == ARGV[2] then
        for i = 6, #KEYS do
            redis.call('ZREM', KEYS[i], ARGV[1])
        end
        redis.call('SET', KEYS[3], ARGV[3], 'PX', ARGV[4])
        redis.call('DEL', KEYS[2], KEYS[4])
        return 'aborted'
    end
    if job then
        return 'changed'
    end
    if redis.call('GET', KEYS[3]) == ARGV[3] then
        return 'aborted'
    end
end
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
redis.call('ZADD', KEYS[5], now, ARGV[1])
for i = 5, #ARGV do
    redis.call('PUBLISH', ARGV[i], '')
end
return 'aborting'
"""
