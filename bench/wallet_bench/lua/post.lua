-- POST /deposit with a random wallet of BENCH_WALLETS and an amount of 0.01-1,000.00.
local wallets = tonumber(os.getenv("BENCH_WALLETS") or "1000")
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

init = function(args)
  math.randomseed(os.time() + tonumber(tostring({}):sub(8), 16) % 100000)
end

request = function()
  local id = math.random(0, wallets - 1)
  local cents = math.random(1, 100000)
  local body = string.format('{"WalletID":"wallet%08d","Amount":%d.%02d}', id, math.floor(cents / 100), cents % 100)
  return wrk.format(nil, nil, nil, body)
end

done = function(summary, latency, requests)
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
    '"p50_us":%d,"p99_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.status, summary.errors.timeout, latency:percentile(50), latency:percentile(99), latency.mean))
end
