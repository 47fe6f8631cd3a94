-- Posts a new person to `POST /api/leads` on every request, for `python -m bench.ingest`.
--
--   wrk -t2 -c64 -d10s --latency -s bench/wrk/post_leads.lua http://127.0.0.1:PORT \
--       -- KEY TAG [IDS]
--
-- KEY   a `write` API key, sent as `Authorization: Bearer KEY`.
-- TAG   letters and digits unique to the run. Every e-mail address holds it, the
--       thread's number and the thread's request count, so no two requests of
--       any run share an address; names and companies are invented letters,
--       like `bench.lead_api.lead` makes, so fuzzy matching finds no one alike.
-- IDS   optional: each thread writes the id of every lead answered 201 to
--       IDS<thread>.txt, one a line, so each can be looked up in the store.
--
-- done() prints one line, `ingest-result` and `name=value` pairs: the requests
-- completed, those answered 201 (`accepted`) and not (`refused`), wrk's socket
-- errors, and latency percentiles in microseconds (wrk's own, closed loop).

local threads = {}

function setup(thread)
   thread:set("number", #threads)
   table.insert(threads, thread)
end

function init(args)
   key, tag, ids_prefix = args[1], args[2], args[3]
   if not key or not tag or not tag:match("^%w+$") then
      error("arguments: KEY TAG [IDS], TAG of letters and digits")
   end
   sent, accepted, refused = 0, 0, 0
   math.randomseed(os.time() * 1009 + number * 7919)
   -- Consecutive numbers from a random start: no phone repeats within a thread.
   phone_base = math.random(0, 7999999)
   headers = {
      ["Content-Type"] = "application/json",
      ["Authorization"] = "Bearer " .. key,
   }
   if ids_prefix then
      ids = assert(io.open(ids_prefix .. number .. ".txt", "w"))
      -- A line at a time: wrk exits without closing a thread's files.
      ids:setvbuf("line")
   end
end

local function invented()
   local letters = {}
   for i = 1, 7 do
      letters[i] = string.char(96 + math.random(26))
   end
   return string.upper(letters[1]) .. table.concat(letters, "", 2)
end

function request()
   sent = sent + 1
   local first, last = invented(), invented()
   local body = string.format(
      '{"email":"%s.%s.%st%dn%d@example.com","first_name":"%s","last_name":"%s",'
         .. '"company":"%s Ltd","phone":"+1 415 %d","source":"bench"}',
      first:lower(), last:lower(), tag, number, sent, first, last, invented(),
      2000000 + (phone_base + sent) % 8000000
   )
   return wrk.format("POST", "/api/leads", headers, body)
end

function response(status, headers, body)
   if status == 201 then
      accepted = accepted + 1
      if ids then
         ids:write(body:match('"id":"([^"]+)"') or "unreadable", "\n")
      end
   else
      refused = refused + 1
   end
end

function done(summary, latency, requests)
   local accepted_all, refused_all = 0, 0
   for _, thread in ipairs(threads) do
      accepted_all = accepted_all + thread:get("accepted")
      refused_all = refused_all + thread:get("refused")
   end
   local errors = summary.errors
   io.write(string.format(
      "ingest-result requests=%d duration_us=%d accepted=%d refused=%d "
         .. "connect=%d read=%d write=%d status=%d timeout=%d "
         .. "p50_us=%.0f p90_us=%.0f p95_us=%.0f p99_us=%.0f max_us=%.0f\n",
      summary.requests, summary.duration, accepted_all, refused_all,
      errors.connect, errors.read, errors.write, errors.status, errors.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(95),
      latency:percentile(99), latency.max
   ))
end
