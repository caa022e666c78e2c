-- wrk script for the publisher's benchmark (bench/publisher_bench.py):
-- POSTs ~260-byte JSON orders to /orders, the tenant varying so that keys
-- spread over the partitions, and counts the answers by status.
--   wrk -t2 -c32 -d10s --latency -s bench/publish.lua http://127.0.0.1:PORT
local threads = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

function init(args)
  n = 0
  statuses = {}
end

local function body(i)
  local b = string.format(
    '{"order_id":"ord-%09d","tenant_id":"tenant-%02d",' ..
    '"customer_id":"cust-%06d","amount":%d.%02d,"currency":"EUR",' ..
    '"items":[{"sku":"SKU-%05d","qty":%d}],' ..
    '"created_at":"2026-11-29T18:00:02Z","status":"paid","note":"',
    i, i % 50, (i * 7919) % 1000000, i % 1000, i % 100, i % 99991,
    i % 5 + 1)
  return b .. string.rep("x", 258 - #b) .. '"}'
end

function request()
  n = n + 1
  return wrk.format("POST", "/orders",
                    {["Content-Type"] = "application/json"},
                    body(id * 100000000 + n))
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("statuses")) do
      total[k] = (total[k] or 0) + v
    end
  end
  for k, v in pairs(total) do
    io.write(string.format("status %d %d\n", k, v))
  end
end
