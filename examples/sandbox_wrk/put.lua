-- wrk script: PUT /rooms/room-{0..3} alternating freeze and unfreeze.
-- Start:  IMKIT_CLIENT_KEY=ck IMKIT_TOKEN=tok IMKIT_API_KEY=ak imkit-batch sandbox \
--           --listen 127.0.0.1:18787 --room room-0:o --room room-1:o --room room-2:o --room room-3:o --client c1
-- Run:    wrk -t2 -c64 -d10s -s examples/sandbox_wrk/put.lua http://127.0.0.1:18787
wrk.headers["IM-CLIENT-KEY"] = "ck"
wrk.headers["IM-Authorization"] = "tok"
wrk.headers["Content-Type"] = "application/json"
local n = 0
request = function()
  n = n + 1
  return wrk.format("PUT", "/rooms/room-" .. (n % 4), nil, '{"status":' .. (n % 2) .. '}')
end
