#!/usr/bin/env bash
# Load benchmark of several `wasmagent serve` processes sharing one Redis (`[cluster]`), against one process with
# the same Redis, on this machine: trivial JavaScript runs (`1+1`) through POST /v1/runs, synchronous and async
# (async: submitted on one node, polled on the next until done, so the latency is submission to result). Prints
# runs/s, p50 and p99 for each. Needs redis-server and python3 (the client is the standard library's http.client).
#
#   scripts/cluster-bench.sh [SECONDS_PER_PHASE] [CONCURRENCY]
#   WASMAGENT_BIN=target/debug/wasmagent scripts/cluster-bench.sh   # skip the release build
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
concurrency="${2:-16}"
command -v redis-server >/dev/null || { echo "redis-server is needed (apt-get install redis-server)" >&2; exit 2; }
bin="${WASMAGENT_BIN:-}"
if [ -z "$bin" ]; then
  cargo build --release -q -p wasmagent-cli
  bin=target/release/wasmagent
fi
work="$(mktemp -d)"
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
key="wa_bench_key"
redis_port=$((20000 + RANDOM % 20000))
redis-server --port "$redis_port" --bind 127.0.0.1 --save "" --appendonly no >"$work/redis.log" 2>&1 &
pids+=($!)
cat > "$work/server.toml" <<TOML
max_concurrent_runs = $(nproc)
max_queued_runs = 1024
[rate_limit]
requests_per_minute = 100000000
concurrent_runs = 100000
[cluster]
redis_url = "redis://127.0.0.1:$redis_port/"
prefix = "bench"
poll_ms = 200
max_pending_runs = 100000
[[auth.api_keys]]
subject = "bench"
sha256 = "$(printf %s "$key" | sha256sum | cut -d' ' -f1)"
scopes = ["runs:write", "runs:read"]
TOML

# Starts a node; its address is left in $node.
start_node() {
  local port=$((20000 + RANDOM % 20000))
  WASMAGENT_CACHE_DIR="$work/cache" "$bin" serve --listen "127.0.0.1:$port" --config "$work/server.toml" \
    >/dev/null 2>>"$work/serve.log" &
  pids+=($!)
  for _ in $(seq 200); do
    curl -fs "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    sleep 0.1
  done
  node="127.0.0.1:$port"
}

cat > "$work/client.py" <<'PY'
import http.client, json, sys, threading, time
mode, duration, concurrency, key = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
nodes = sys.argv[5:]
headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
latencies, errors, lock = [], [0], threading.Lock()
def worker(n):
    conns = [http.client.HTTPConnection(*node.split(":"), timeout=60) for node in nodes]
    i, end = n, time.monotonic() + duration
    while time.monotonic() < end:
        node = i % len(nodes); i += 1
        started = time.monotonic()
        try:
            if mode == "sync":
                conns[node].request("POST", "/v1/runs", '{"language":"js","code":"1+1"}', headers)
                r = conns[node].getresponse(); r.read(); ok = r.status == 200
            else:
                conns[node].request("POST", "/v1/runs", '{"language":"js","code":"1+1","async":true}', headers)
                r = conns[node].getresponse(); body = r.read(); ok = r.status == 202
                run = json.loads(body)["id"] if ok else None
                reader = conns[(node + 1) % len(nodes)]
                while ok:
                    reader.request("GET", f"/v1/runs/{run}", headers=headers)
                    r = reader.getresponse(); status = json.loads(r.read()).get("status")
                    if status in ("done", "failed"):
                        ok = status == "done"; break
                    time.sleep(0.005)
        except Exception:
            ok = False
            conns = [http.client.HTTPConnection(*n.split(":"), timeout=60) for n in nodes]
        with lock:
            if ok: latencies.append(time.monotonic() - started)
            else: errors[0] += 1
threads = [threading.Thread(target=worker, args=(n,)) for n in range(concurrency)]
began = time.monotonic()
for t in threads: t.start()
for t in threads: t.join()
elapsed = time.monotonic() - began
latencies.sort()
pct = lambda p: latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000 if latencies else float("nan")
print(f"{len(nodes)} node(s)  {mode:5}  {len(latencies) / elapsed:8.1f} runs/s  p50 {pct(0.50):7.1f} ms  "
      f"p99 {pct(0.99):7.1f} ms  errors {errors[0]}")
PY

start_node
first=$node
# Warm-up: the first run compiles the engine or loads it from the disk cache.
python3 "$work/client.py" sync 2 2 "$key" "$first" >/dev/null
echo "wasmagent cluster benchmark: ${duration}s per phase, $concurrency client threads, $(nproc) CPUs, $bin"
python3 "$work/client.py" sync "$duration" "$concurrency" "$key" "$first"
python3 "$work/client.py" async "$duration" "$concurrency" "$key" "$first"
start_node
second=$node
start_node
third=$node
python3 "$work/client.py" sync 2 2 "$key" "$second" "$third" >/dev/null
python3 "$work/client.py" sync "$duration" "$concurrency" "$key" "$first" "$second" "$third"
python3 "$work/client.py" async "$duration" "$concurrency" "$key" "$first" "$second" "$third"
