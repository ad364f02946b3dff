#!/usr/bin/env bash
# vLLM-cpu decode throughput for the engine benchmark: ONE model on BOTH cores (the same
# resources our engine gets), N concurrent requests x T generated tokens, greedy, ignore_eos.
# Needs the peer set up first: PEER=/tmp/peer bash ../shared/tools/peer_vllm_cpu.sh setup convert
# Usage: benchmarks/peer_vllm_decode.sh [MODEL ...]   (env: N=32 T=64 PEER=/tmp/peer DTYPE=bfloat16)
set -euo pipefail
PEER=${PEER:-/tmp/peer}; N=${N:-32}; T=${T:-64}; PORT=${PORT:-8111}; DTYPE=${DTYPE:-bfloat16}
export TMPDIR=$PEER/tmp XDG_CACHE_HOME=$PEER/cache VLLM_CACHE_ROOT=$PEER/cache/vllm HF_HOME=$PEER/cache/hf
mkdir -p "$TMPDIR" "$PEER/logs"
models=("$@"); [[ ${#models[@]} -gt 0 ]] || models=(smollm2-135m gemma3-270m)
for name in "${models[@]}"; do
  log=$PEER/logs/decode-$name.log
  VLLM_TARGET_DEVICE=cpu OMP_NUM_THREADS=2 VLLM_CPU_OMP_THREADS_BIND=0-1 VLLM_CPU_KVCACHE_SPACE=2 \
    HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
    setsid "$PEER/venv/bin/vllm" serve "$PEER/hf/$name" --served-model-name "$name" \
      --host 127.0.0.1 --port "$PORT" --dtype "$DTYPE" --max-model-len 2048 --enforce-eager \
      >"$log" 2>&1 &
  pid=$!
  trap 'kill -TERM -- -$pid 2>/dev/null || true' EXIT
  for _ in $(seq 300); do curl -sf "http://127.0.0.1:$PORT/v1/models" >/dev/null && break; sleep 2; done
  "$PEER/venv/bin/python" - "$name" "$PORT" "$N" "$T" <<'PY'
import asyncio, sys, time, httpx
name, port, n, t = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
async def one(c):
    r = await c.post(f"http://127.0.0.1:{port}/v1/completions", json={
        "model": name, "prompt": "Once upon a time", "max_tokens": t,
        "temperature": 0, "ignore_eos": True})
    return r.json()["usage"]["completion_tokens"]
async def main():
    async with httpx.AsyncClient(timeout=600) as c:
        await one(c)  # warm-up
        t0 = time.perf_counter()
        toks = sum(await asyncio.gather(*(one(c) for _ in range(n))))
        dt = time.perf_counter() - t0
    print(f"vllm-cpu {name} batch {n}: {toks} tok in {dt:.2f} s -> {toks/dt:.1f} tok/s")
asyncio.run(main())
PY
  kill -TERM -- "-$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; trap - EXIT
done
