#!/usr/bin/env bash
# Issue 6 benchmark: `muxserve bench` against `muxserve serve` on the four-model CPU set of
# `muxserve compare` (same request list: same workload flags and seed), to price the HTTP layer
# against compare's in-process muxserve row. Usage: benchmarks/bench_serve_e2e.sh OUT.json
# (env: ALPHA=2.1 MAX_RATE=0.5 DURATION=50 PORT=8123 DTYPE=float32)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-/tmp/serve_e2e.json}; ALPHA=${ALPHA:-2.1}; RATE=${MAX_RATE:-0.5}; DUR=${DURATION:-50}
PORT=${PORT:-8123}; DTYPE=${DTYPE:-float32}
.venv/bin/muxserve serve --port "$PORT" --mode muxserve --dtype "$DTYPE" \
  --kv-pool-mib 256 --model smollm2-a=smollm2-135m --model gemma3-a=gemma3-270m \
  --model smollm2-b=smollm2-135m --model gemma3-b=gemma3-270m --log-level warning &
srv=$!
trap 'kill -INT $srv 2>/dev/null; wait $srv 2>/dev/null || true' EXIT
for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/ready" >/dev/null && break; sleep 1; done
.venv/bin/muxserve bench --base-url "http://127.0.0.1:$PORT" \
  --models smollm2-a,gemma3-a,smollm2-b,gemma3-b --alpha "$ALPHA" --max-rate "$RATE" \
  --lengths sharegpt --max-prompt-tokens 256 --max-output-tokens 128 --duration-s "$DUR" \
  --seed 0 --measure-baseline --quiet -o "$OUT"
