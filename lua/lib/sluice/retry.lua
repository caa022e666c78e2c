-- sluice.retry -- the default retry policy, written out in Lua.
--
-- sluice applies this policy (in C) to every sink without a `retry:`
-- script. It is here to read and to copy: a sink's retry script can call
-- it for the cases it does not handle itself:
--
--   local policy = require("sluice.retry")
--   function retry(a)             -- in your script, e.g. policies/crm.lua
--     if a.status == 409 then return "done" end   -- already exists
--     return policy.default(a)
--   end
--
-- `a` is the attempt: a.sink, a.attempt (failed attempts so far, this
-- one included), a.elapsed_ms, a.status (nil when no response came),
-- a.error, a.headers, a.body, a.retry_after_ms, a.retryable, and the
-- pipeline's a.backoff_ms and a.backoff_max_ms (delivery.retry_backoff
-- and delivery.retry_backoff_max).

local M = {}

-- Statuses worth another attempt: the request may succeed later.
M.retryable_status = {
  [408] = true, -- Request Timeout
  [425] = true, -- Too Early
  [429] = true, -- Too Many Requests
  [500] = true, -- Internal Server Error
  [502] = true, -- Bad Gateway
  [503] = true, -- Service Unavailable
  [504] = true, -- Gateway Timeout
}

-- Retry-After is honoured up to this long.
M.retry_after_cap_ms = 300000

-- Exponential backoff with full jitter: a random wait up to
-- base * 2^(attempt-1), capped, so that workers that failed together
-- do not all come back together.
function M.backoff(attempt, base_ms, max_ms)
  local ceiling = base_ms
  for _ = 2, attempt do
    if ceiling >= max_ms then break end
    ceiling = ceiling * 2
  end
  if ceiling > max_ms then ceiling = max_ms end
  return math.random(0, ceiling)
end

function M.default(a)
  -- No response at all (refused, reset, timed out): transient.
  local transient = a.status == nil or M.retryable_status[a.status]
  if not transient then
    return "give_up", ("HTTP %d: permanent"):format(a.status)
  end
  local delay = M.backoff(a.attempt, a.backoff_ms, a.backoff_max_ms)
  if a.retry_after_ms and a.retry_after_ms > delay then
    delay = math.min(a.retry_after_ms, M.retry_after_cap_ms)
  end
  return "retry", delay
end

return M
