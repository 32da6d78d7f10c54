-- wrk script for bench/memory.sh and bench.sh's ORDER mode: every request carries the next
-- session cookie from the file given after `--` (one `name=value` per line), so the load
-- touches every session.
-- Each thread starts at its own offset; done() is wrk-stats.lua's (its STATS line), loaded
-- from beside this file.
dofile((debug.getinfo(1, "S").source:match("^@(.*/)") or "./") .. "wrk-stats.lua")

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
