-- wrk script: PUT /v1/kv/k<random key> with a 256-byte value, the same
-- load shape as loadgen's default (100 000 keys, 256-byte values).
--
--   wrk -t2 -c64 -d10s --latency -s tests/wrk/put.lua http://127.0.0.1:7000
--
-- KEYS and VALUE_SIZE may be overridden: wrk ... -- 100000 256

local keys = 100000
local value = string.rep("v", 256)

function init(args)
  if args[1] then keys = tonumber(args[1]) end
  if args[2] then value = string.rep("v", tonumber(args[2])) end
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
end

function request()
  local path = string.format("/v1/kv/k%015d", math.random(0, keys - 1))
  return wrk.format("PUT", path, nil, value)
end

function response(status, headers, body)
  if status ~= 200 then
    wrk.thread:stop()
  end
end
