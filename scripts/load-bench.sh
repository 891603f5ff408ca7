#!/usr/bin/env bash
# Load benchmark of `wasmagent serve`: trivial JavaScript runs (`1+1`) through POST /v1/runs, authenticated with an
# API key, measured with wrk (Debian: apt-get install wrk). Prints wrk's summary with latency percentiles.
#
#   scripts/load-bench.sh [DURATION_SECONDS] [CONNECTIONS]
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-20}"
connections="${2:-16}"
command -v wrk >/dev/null || { echo "wrk is needed (apt-get install wrk)" >&2; exit 2; }
cargo build --release -q -p wasmagent-cli
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
key="wa_bench_key"
cat > "$work/server.toml" <<TOML
max_concurrent_runs = $(nproc)
max_queued_runs = 1024
[rate_limit]
requests_per_minute = 100000000
concurrent_runs = 100000
[[auth.api_keys]]
subject = "bench"
sha256 = "$(printf %s "$key" | sha256sum | cut -d' ' -f1)"
scopes = ["runs:write", "runs:read"]
TOML
cat > "$work/post.lua" <<LUA
wrk.method = "POST"
wrk.body = '{"language":"js","code":"1+1"}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $key"
LUA
port=$((20000 + RANDOM % 20000))
target/release/wasmagent serve --listen "127.0.0.1:$port" --config "$work/server.toml" 2>"$work/serve.log" &
server=$!
for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
# Warm-up (the engine compiles or loads from the disk cache on the first run), then the measured run.
wrk -t2 -c"$connections" -d3s -s "$work/post.lua" "http://127.0.0.1:$port/v1/runs" >/dev/null
wrk -t2 -c"$connections" -d"${duration}s" --latency -s "$work/post.lua" "http://127.0.0.1:$port/v1/runs"
curl -fs "http://127.0.0.1:$port/metrics" | grep -E '^wasmagent_(runs_total|rejected_requests_total)' || true
