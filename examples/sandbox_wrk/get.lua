-- wrk script: GET /rooms/room-{0..3}. Same server as put.lua.
-- Run:    wrk -t2 -c64 -d10s -s examples/sandbox_wrk/get.lua http://127.0.0.1:18787
wrk.headers["IM-CLIENT-KEY"] = "ck"
wrk.headers["IM-Authorization"] = "tok"
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/rooms/room-" .. (n % 4))
end
