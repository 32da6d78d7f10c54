-- wrk script: adds one machine-readable STATS line at the end of a run.
-- Only done() is defined, so wrk's per-request fast path is unchanged.
-- err_status counts responses that are not 2xx/3xx.
done = function(summary, latency, requests)
  local s = summary
  local secs = s.duration / 1e6
  io.write(string.format(
    "STATS requests=%d duration_s=%.3f bytes=%d rps=%.1f mean_us=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d " ..
    "err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d\n",
    s.requests, secs, s.bytes, s.requests / secs, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9), latency.max,
    s.errors.connect, s.errors.read, s.errors.write, s.errors.status, s.errors.timeout))
end
