-- S1's request (as bench/s1.lua), reporting wrk's latency both as wrk prints it and as measured.
-- wrk (4.x) "corrects" its latency histogram for coordinated omission before it prints it or
-- hands it to done(): with e = duration / (requests / connections), the mean time between a
-- connection's requests, every sample n >= 2e adds samples at n - e, n - 2e, ... (> e). A
-- stall of s ms that holds all connections thus adds about 64 * s / e samples, more for a proxy
-- that serves faster (smaller e): one 100 ms stall in a 3 s window at 18k requests/s makes the
-- printed p99 about 100 ms. This undoes it: the corrected histogram is read back as 20,000
-- quantiles in 50 µs bins and the correction is subtracted from the top bin down (a bin's raw
-- count is its count less the raw counts e, 2e, ... above it). Checked against the native
-- engine's own per-connection timings (bench/analysis.md, S1, 6 Dec "The p99 tail").
--   BENCH_URL=http://127.0.0.1:22080/1k BENCH_HOST=127.0.0.1:22080 [CONNS=64] \
--     wrk -t2 -c64 -d3s -s bench/tools/wrk-raw.lua http://127.0.0.1:PORT/
-- CONNS must equal wrk's -c. Prints one JSON line: rps, e_us, wrk's p50/p90/p99, raw_p50/p90/
-- p99/p999 and max, in µs.
local url = os.getenv("BENCH_URL")
local host = os.getenv("BENCH_HOST")
wrk.method = "GET"
wrk.path = url
wrk.headers["Host"] = host
function done(summary, latency, requests)
  -- e as wrk computes it (integer division)
  local conns = tonumber(os.getenv("CONNS") or "64")
  local e = math.floor(summary.duration / math.floor(summary.requests / conns))
  local K, W = 20000, 50
  local corr, top = {}, 0
  for i = 1, K do
    local v = latency:percentile((i - 0.5) * 100 / K)
    local b = math.floor(v / W)
    corr[b] = (corr[b] or 0) + 1
    if b > top then top = b end
  end
  local raw = {}
  for b = top, 0, -1 do
    local c = corr[b] or 0
    if b * W > e then
      local k = 1
      while (b * W + k * e) / W <= top do
        c = c - (raw[math.floor((b * W + k * e) / W)] or 0)
        k = k + 1
      end
    end
    if c < 0 then c = 0 end
    raw[b] = c
  end
  local function pct(h, p)
    local n = 0
    for b = 0, top do n = n + (h[b] or 0) end
    local want, acc = n * p, 0
    for b = 0, top do
      acc = acc + (h[b] or 0)
      if acc >= want then return b * W end
    end
    return top * W
  end
  io.write(string.format('{"rps":%.0f,"e_us":%d,"p50":%d,"p90":%d,"p99":%d,"raw_p50":%d,"raw_p90":%d,"raw_p99":%d,"raw_p999":%d,"max":%d}\n',
    summary.requests / summary.duration * 1e6, e, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    pct(raw, 0.5), pct(raw, 0.9), pct(raw, 0.99), pct(raw, 0.999), latency.max))
end
