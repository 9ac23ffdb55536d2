-- wrk script: the four endpoints in turn (PUT, GET, POST mute, DELETE unmute) on room-{0..3}.
-- Same server as put.lua. Concurrent connections interleave, so some unmutes meet an
-- unmuted pair and get the documented 400 ROOM_NOT_MUTED (wrk counts them as non-2xx).
-- Run:    wrk -t2 -c64 -d10s -s examples/sandbox_wrk/mix.lua http://127.0.0.1:18787
wrk.headers["IM-CLIENT-KEY"] = "ck"
wrk.headers["IM-Authorization"] = "tok"
wrk.headers["IM-API-KEY"] = "ak"
local n = 0
request = function()
  n = n + 1
  local g = math.floor(n / 4)
  local r = "room-" .. (g % 4)
  local k = n % 4
  if k == 0 then return wrk.format("PUT", "/rooms/" .. r, nil, '{"status":' .. (g % 2) .. '}')
  elseif k == 1 then return wrk.format("GET", "/rooms/" .. r)
  elseif k == 2 then return wrk.format("POST", "/admin/clients/c1/mute/" .. r)
  else return wrk.format("DELETE", "/admin/clients/c1/mute/" .. r) end
end
