-- wrk script for bench/api.py: the same requests for Herald's api and for the baseline.
--   wrk ... -s wrk_messages.lua http://127.0.0.1:PORT -- post BODIES_FILE API_KEY
--       POST /v1/messages, cycling through the JSON bodies of BODIES_FILE (one per line)
--   wrk ... -s wrk_messages.lua http://127.0.0.1:PORT -- get IDS_FILE API_KEY
--       GET /v1/messages/{id}, an id drawn at random from IDS_FILE (one per line)
-- Every request carries "Authorization: Bearer API_KEY". Requests are formatted once in
-- init(); a response other than 201 (POST) or 200 (GET) counts as a status error, which
-- wrk's summary does not do by itself for 2xx. done() prints one line "WRK_RESULT {json}".

local thread_count = 0
local threads = {}

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
  threads[#threads + 1] = thread
end

local requests = {}
local position = 1
local random_order = false
local expected_status = 200
unexpected = 0

function init(args)
  local mode, path, key = args[1], args[2], args[3]
  local headers = { ["Authorization"] = "Bearer " .. tostring(key) }
  math.randomseed(os.time() * 1000 + (thread_number or 0))
  for line in io.lines(path) do
    if line ~= "" then
      if mode == "post" then
        headers["Content-Type"] = "application/json"
        requests[#requests + 1] = wrk.format("POST", "/v1/messages", headers, line)
      elseif mode == "get" then
        requests[#requests + 1] = wrk.format("GET", "/v1/messages/" .. line, headers)
      else
        error("mode must be post or get, not " .. tostring(mode))
      end
    end
  end
  if #requests == 0 then
    error("no requests in " .. tostring(path))
  end
  random_order = mode == "get"
  expected_status = mode == "post" and 201 or 200
  position = math.random(#requests)
end

function request()
  if random_order then
    return requests[math.random(#requests)]
  end
  local next_request = requests[position]
  position = position % #requests + 1
  return next_request
end

function response(status, _, _)
  if status ~= expected_status then
    unexpected = unexpected + 1
  end
end

function done(summary, latency, _)
  local errors = summary.errors
  local wrong = 0
  for _, thread in ipairs(threads) do
    wrong = wrong + (thread:get("unexpected") or 0)
  end
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d, "unexpected": %d, "p50_us": %d, '
      .. '"p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, wrong, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean
  ))
end
