-- S1 for wrk: the request line carries the absolute-form URL a forward proxy receives
-- (BENCH_URL), or the origin-form path for the direct row; done() prints one JSON line.
local url = os.getenv("BENCH_URL")
local host = os.getenv("BENCH_HOST")
wrk.method = "GET"
wrk.path = url
wrk.headers["Host"] = host

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d}\n',
    summary.requests, summary.duration, summary.bytes, latency:percentile(50), latency:percentile(99),
    latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
