-- wrk script for benchmarks/http_ingest.py: every request is a distinct Clickpost webhook.
--
--   wrk -s benchmarks/webhook.lua URL -- FIRST STEP COUNT KEY [SPREAD]
--
-- Waybills BENCH0000000 … are registered beforehand. This script takes the waybills
-- FIRST, FIRST+STEP, … (COUNT of them; STEP is the number of wrk processes, so that two
-- processes never post the same shipment) and walks them round by round through picked up,
-- in transit and delivered, so each request is a new event that plans what a real one would.
-- With SPREAD (a number prime to COUNT, such as 7919) the waybills come in a scattered order
-- instead of one after the other, as they would from a real courier network.
-- At the end it prints one line for the benchmark to parse: RESULT requests duration_us
-- p50_us p99_us non_2xx socket_errors.

local first, step, count, key, spread = 0, 1, 1000, "", 1
local codes = { 4, 5, 8 }
local labels = { "PickedUp", "InTransit", "Delivered" }
local n = 0

local body = [[{"waybill":"%s","cp_id":4,"clickpost_status_code":%d,]]
  .. [["clickpost_status_description":"%s","status":"%s","location":"Bengaluru Hub",]]
  .. [["remark":"","timestamp":"%s","additional":{"latest_status":{]]
  .. [["clickpost_status_code":%d,"timestamp":"%s","status":"%s",]]
  .. [["location":"Bengaluru Hub","remark":""},"notification_event_id":%d}}]]

function init(args)
  first, step, count, key = tonumber(args[1]), tonumber(args[2]), tonumber(args[3]), args[4]
  spread = tonumber(args[5] or "1")
end

function request()
  local slot = (n * spread) % count
  local round = math.floor(n / count) % #codes + 1
  n = n + 1
  local waybill = string.format("BENCH%07d", first + slot * step)
  local code, label = codes[round], labels[round]
  local at = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local payload = string.format(body, waybill, code, label, label, at, code, at, label, round)
  local headers = { ["Content-Type"] = "application/json", ["webhook_key"] = key }
  return wrk.format("POST", "/webhooks/clickpost", headers, payload)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d\n", summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(99), e.status,
    e.connect + e.read + e.write + e.timeout))
end
