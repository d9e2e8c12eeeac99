-- post.lua - the wrk script of bench/ingest.sh: POSTs a request body built from a template
-- file, the same file bench/loadgen reads, so that both tools send the same requests. In the
-- template each {id} becomes a messageId never sent before (a random prefix per run and
-- thread, then a counter), so that the server's dedup skips nothing, and each {user} the
-- number (0 to 99,999) of a user drawn anew at each {id}: a message whose {id} comes first
-- names one user throughout, and every log partition is written. Both are fixed-width, as
-- in bench/loadgen. Counts every answer other than 200.
--
--   wrk -s bench/wrk/post.lua URL -- TEMPLATE AUTH_B64 PATH EVENTS_PER_REQUEST
--
-- AUTH_B64 is base64("WRITEKEY:"), sent as HTTP Basic auth (empty: none). done() prints one
-- line, "wrk-result {json}".

local threads = {}

function setup(thread)
    table.insert(threads, thread)
    thread:set("tid", #threads)
end

-- globals are per thread (each has its own Lua state); done() reads them with thread:get
non200 = 0
first_non200 = 0
per_request = 1
local path, headers, pieces, kinds, prefix
local next_id, user = 0, "000000"

local function read_all(name)
    local f = assert(io.open(name, "rb"))
    local s = f:read("*a")
    f:close()
    return (s:gsub("[\r\n]+$", ""))
end

function init(args)
    local template = read_all(args[1])
    headers = { ["Content-Type"] = "application/json" }
    if args[2] and args[2] ~= "" then
        headers["Authorization"] = "Basic " .. args[2]
    end
    path = args[3] or "/"
    per_request = tonumber(args[4] or "1")
    -- split the template at its placeholders: pieces[i] precedes hole kinds[i]
    pieces, kinds = {}, {}
    local at = 1
    while true do
        local s, e, name = template:find("{(%a+)}", at)
        if not s or (name ~= "id" and name ~= "user") then
            if s then error("unknown placeholder {" .. name .. "}") end
            break
        end
        table.insert(pieces, template:sub(at, s - 1))
        table.insert(kinds, name)
        at = e + 1
    end
    table.insert(pieces, template:sub(at))
    local f = assert(io.open("/dev/urandom", "rb"))
    local r = f:read(4)
    f:close()
    local b1, b2, b3, b4 = r:byte(1, 4)
    prefix = string.format("wk%02x%02x%02x%02x%02d-", b1, b2, b3, b4, tid % 100)
end

function request()
    local out = {}
    for i = 1, #kinds do
        out[#out + 1] = pieces[i]
        if kinds[i] == "id" then
            out[#out + 1] = prefix .. string.format("%012d", next_id)
            user = string.format("%06d", (next_id * 7919 + tid * 104729) % 100000)
            next_id = next_id + 1
        else
            out[#out + 1] = user
        end
    end
    out[#out + 1] = pieces[#pieces]
    return wrk.format("POST", path, headers, table.concat(out))
end

function response(status, hdrs, body)
    if status ~= 200 then
        non200 = non200 + 1
        if first_non200 == 0 then first_non200 = status end
    end
end

function done(summary, latency, requests)
    local bad, first = 0, 0
    for _, t in ipairs(threads) do
        bad = bad + t:get("non200")
        if first == 0 then first = t:get("first_non200") end
    end
    local per = threads[1]:get("per_request")
    local e = summary.errors
    local secs = summary.duration / 1e6
    io.write(string.format('wrk-result {"requests":%d,"seconds":%.2f,"rps":%.1f,' ..
        '"events_per_s":%.0f,"per_request":%d,"non200":%d,"first_non200":%d,' ..
        '"socket_errors":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
        summary.requests, secs, summary.requests / secs, per * summary.requests / secs, per,
        bad, first, e.connect + e.read + e.write + e.timeout, latency:percentile(50),
        latency:percentile(99), latency.max))
end
