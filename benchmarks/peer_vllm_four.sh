#!/usr/bin/env bash
# The vLLM-cpu peer of `muxserve compare`'s four-model CPU set: one vLLM server per model
# instance (separate weights), two servers pinned to each core -- the same core pairing as
# muxserve's spatial mode (popularity ranks 1+4 on core 0, 2+3 on core 1).
# Needs the peer set up by /work/shared/tools/peer_vllm_cpu.sh (venv + converted HF folders).
# Usage: PEER=/tmp/peer benchmarks/peer_vllm_four.sh {serve|stop|urls}
set -euo pipefail

PEER=${PEER:-/tmp/peer}
VENV=$PEER/venv
HF=$PEER/hf
LOGS=$PEER/logs4
PIDS=$PEER/pids4
KV_GIB=${KV_GIB:-1}
# served-name:hf-folder:port:core
SERVERS=("smollm2-a:smollm2-135m:8111:0" "gemma3-b:gemma3-270m:8114:0"
         "gemma3-a:gemma3-270m:8112:1" "smollm2-b:smollm2-135m:8113:1")
export TMPDIR=$PEER/tmp XDG_CACHE_HOME=$PEER/cache VLLM_CACHE_ROOT=$PEER/cache/vllm HF_HOME=$PEER/cache/hf
mkdir -p "$TMPDIR"

log() { echo "[peer4 $(date +%T)] $*" >&2; }
alive() { [[ -f $PIDS ]] && while read -r pid; do kill -0 "$pid" 2>/dev/null && return 0; done <"$PIDS"; return 1; }

serve() {
  [[ -x $VENV/bin/vllm ]] || { log "no $VENV/bin/vllm: run peer_vllm_cpu.sh setup convert first"; exit 1; }
  if alive; then log "serve: already running ($(tr '\n' ' ' <"$PIDS"))"; return; fi
  mkdir -p "$LOGS"; : >"$PIDS"
  local t0=$SECONDS
  for s in "${SERVERS[@]}"; do
    IFS=: read -r name folder port core <<<"$s"
    # setsid: own process group, so `stop` also takes down the engine-core child
    VLLM_TARGET_DEVICE=cpu OMP_NUM_THREADS=1 VLLM_CPU_OMP_THREADS_BIND="$core" \
      VLLM_CPU_KVCACHE_SPACE=$KV_GIB HF_HUB_OFFLINE=1 VLLM_NO_USAGE_STATS=1 \
      setsid taskset -c "$core" "$VENV/bin/vllm" serve "$HF/$folder" \
        --served-model-name "$name" --host 127.0.0.1 --port "$port" \
        --dtype bfloat16 --max-model-len 2048 --enforce-eager \
        >"$LOGS/$name.log" 2>&1 &
    echo $! >>"$PIDS"
    log "serve: $name ($folder) pid $! core $core port $port"
  done
  local pids; mapfile -t pids <"$PIDS"
  for i in "${!SERVERS[@]}"; do
    IFS=: read -r name folder port core <<<"${SERVERS[$i]}"
    until curl -sf "http://127.0.0.1:$port/v1/models" >/dev/null; do
      kill -0 "${pids[$i]}" 2>/dev/null || { log "serve: $name died"; tail -n 20 "$LOGS/$name.log"; exit 1; }
      (( SECONDS - t0 < 900 )) || { log "serve: timeout"; exit 1; }
      sleep 2
    done
    log "serve: $name ready after $((SECONDS - t0)) s"
  done
}

stop() {  # only the process groups this script started
  [[ -f $PIDS ]] || { log "stop: nothing to stop"; return; }
  local pids pid; mapfile -t pids <"$PIDS"
  for pid in "${pids[@]}"; do kill -TERM -- "-$pid" 2>/dev/null && log "stop: TERM group $pid" || true; done
  for _ in {1..15}; do pgrep -g "$(IFS=,; echo "${pids[*]}")" >/dev/null || break; sleep 1; done
  for pid in "${pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null && log "stop: KILL group $pid" || true; done
  rm -f "$PIDS"
}

urls() {  # the --base-url pairs of `muxserve bench`
  for s in "${SERVERS[@]}"; do
    IFS=: read -r name folder port core <<<"$s"
    printf -- '--base-url %s=http://127.0.0.1:%s/v1 ' "$name" "$port"
  done
  echo
}

case ${1:-} in
  serve) serve ;; stop) stop ;; urls) urls ;;
  *) echo "usage: $0 {serve|stop|urls}" >&2; exit 2 ;;
esac
