-- wrk script: like get.lua, and at the end prints how many answers had each status, so a
-- run against `--rate-limit 60/min` shows how many passed the limit in the window.
-- Run:    wrk -t1 -c4 -d10s -s examples/sandbox_wrk/status.lua http://127.0.0.1:18788
wrk.headers["IM-CLIENT-KEY"] = "ck"
wrk.headers["IM-Authorization"] = "tok"
local threads = {}
setup = function(thread)
  table.insert(threads, thread)
end
init = function()
  counts = {}
end
request = function()
  return wrk.format("GET", "/rooms/room-0")
end
response = function(status)
  counts[status] = (counts[status] or 0) + 1
end
done = function()
  local total = {}
  for _, t in ipairs(threads) do
    local c = t:get("counts")
    for s, n in pairs(c) do total[s] = (total[s] or 0) + n end
  end
  for s, n in pairs(total) do io.write(string.format("status %d: %d\n", s, n)) end
end
