-- wrk script for bench/memory.sh: every request carries the next session cookie from the
-- file given after `--` (one `name=value` per line), so the load touches every session.
-- Each thread starts at its own offset; done() prints the same STATS line as wrk-stats.lua.
local cookies, i = {}, 0
local n_threads, thread_no = 0, 0

setup = function(thread)
  thread:set("thread_no", n_threads)
  n_threads = n_threads + 1
end

init = function(args)
  for line in io.lines(args[1]) do
    if #line > 0 then cookies[#cookies + 1] = line end
  end
  if #cookies == 0 then error("no cookies in " .. args[1]) end
  i = (thread_no * 7919) % #cookies
end

request = function()
  i = i % #cookies + 1
  return wrk.format("GET", "/", { ["Cookie"] = cookies[i] })
end

done = function(summary, latency, requests)
  local s = summary
  local secs = s.duration / 1e6
  io.write(string.format(
    "STATS requests=%d duration_s=%.3f bytes=%d rps=%.1f p50_us=%d p99_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    s.requests, secs, s.bytes, s.requests / secs,
    latency:percentile(50), latency:percentile(99), latency.max,
    s.errors.connect, s.errors.read, s.errors.write, s.errors.status, s.errors.timeout))
end
