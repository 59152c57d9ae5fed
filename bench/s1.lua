-- S1 for wrk: the request line carries the absolute-form URL a forward proxy receives
-- (BENCH_URL), or the origin-form path for the direct row; done() prints one JSON line.
--
-- wrk 4 "corrects" its latency histogram for coordinated omission before done() sees it: with
-- e = duration / (requests / connections), the mean time between a connection's requests, every
-- sample n >= 2e adds samples at n - e, n - 2e, ... (> e). A stall of s ms that holds all the
-- connections thus adds about connections * s / e samples, more for a target that serves faster
-- (smaller e). p50_us/p99_us are wrk's, as it prints them; *_measured_us undo the correction:
-- the histogram is read back as 20,000 quantiles in 50 us bins and, from the top bin down, a
-- bin's own count is its count less the own counts e, 2e, ... above it (bench/analysis.md, S1,
-- "The p99 tail, measured"). BENCH_CONNS is wrk's -c (64 unless set).
local url = os.getenv("BENCH_URL")
local host = os.getenv("BENCH_HOST")
local conns = tonumber(os.getenv("BENCH_CONNS") or "64")
wrk.method = "GET"
wrk.path = url
wrk.headers["Host"] = host

-- The percentiles (0..1) of `ps` of the histogram `latency` with wrk's correction undone.
local function measured(summary, latency, ps)
  local per = math.floor(summary.requests / conns)
  if per < 1 then return nil end
  local e = math.floor(summary.duration / per)
  local K, W = 20000, 50
  local corr, top = {}, 0
  for i = 1, K do
    local b = math.floor(latency:percentile((i - 0.5) * 100 / K) / W)
    corr[b] = (corr[b] or 0) + 1
    if b > top then top = b end
  end
  local own, total = {}, 0
  for b = top, 0, -1 do
    local c = corr[b] or 0
    if b * W > e then
      local k = 1
      while math.floor((b * W + k * e) / W) <= top do
        c = c - (own[math.floor((b * W + k * e) / W)] or 0)
        k = k + 1
      end
    end
    if c < 0 then c = 0 end
    own[b] = c
    total = total + c
  end
  local out = {}
  for i, p in ipairs(ps) do
    local acc = 0
    out[i] = top * W
    for b = 0, top do
      acc = acc + (own[b] or 0)
      if acc >= total * p then
        out[i] = b * W
        break
      end
    end
  end
  return out
end

function done(summary, latency, requests)
  local e = summary.errors
  local m = measured(summary, latency, { 0.5, 0.99 }) or { latency:percentile(50), latency:percentile(99) }
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"p50_measured_us":%d,"p99_measured_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(99),
    latency.max, m[1], m[2], e.connect, e.read, e.write, e.status, e.timeout))
end
