-- wrk script for bench/api_async_vs_sync.py.
--   wrk ... -s wrk_script.lua http://127.0.0.1:PORT/items -- post BODIES_FILE
--       POST /items, cycling through the JSON bodies of BODIES_FILE (one per line)
--   wrk ... -s wrk_script.lua http://127.0.0.1:PORT -- get IDS_FILE
--       GET /items/{id}, an id drawn at random from IDS_FILE (one per line) per request
-- Requests are formatted once in init(); done() prints one line "WRK_RESULT {json}".

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

local requests = {}
local position = 1
local random_order = false

function init(args)
  local mode, path = args[1], args[2]
  math.randomseed(os.time() * 1000 + (thread_number or 0))
  for line in io.lines(path) do
    if line ~= "" then
      if mode == "post" then
        requests[#requests + 1] =
          wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, line)
      elseif mode == "get" then
        requests[#requests + 1] = wrk.format("GET", "/items/" .. line)
      else
        error("mode must be post or get, not " .. tostring(mode))
      end
    end
  end
  if #requests == 0 then
    error("no requests in " .. tostring(path))
  end
  random_order = mode == "get"
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

function done(summary, latency, _)
  local errors = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "connect": %d, "read": %d, '
      .. '"write": %d, "status": %d, "timeout": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f}\n',
    summary.requests, summary.duration, errors.connect, errors.read, errors.write,
    errors.status, errors.timeout, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean
  ))
end
