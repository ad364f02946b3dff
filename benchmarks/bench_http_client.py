"""How much load can `muxserve bench` itself generate on this machine?

Runs the stub OpenAI server (muxserve.bench.stub) in its own process and `muxserve bench`
against it at rising rates; reports achieved throughput and the client's send lag. A server
benchmark is only valid below the rate where the lag grows.

    .venv/bin/python benchmarks/bench_http_client.py --rates 25,50,100,200 --duration-s 5
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

STUB = """
import sys, uvicorn
from muxserve.bench.stub import StubConfig, make_app
uvicorn.run(make_app(StubConfig(float(sys.argv[2]), float(sys.argv[3]))), host="127.0.0.1",
            port=int(sys.argv[1]), log_level="critical")
"""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="25,50,100,200", help="total req/s, comma list")
    ap.add_argument("--duration-s", type=float, default=5.0)
    ap.add_argument("--lengths", default="fixed:32,8")
    ap.add_argument("--first-token-s", type=float, default=0.02)
    ap.add_argument("--token-s", type=float, default=0.005)
    args = ap.parse_args()
    from muxserve.bench.stub import free_port

    port = free_port()
    stub = subprocess.Popen([sys.executable, "-c", STUB, str(port), str(args.first_token_s),
                             str(args.token_s)])
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(200):
            try:
                httpx.get(f"{url}/v1/models", timeout=1.0)
                break
            except httpx.TransportError:
                time.sleep(0.05)
        print("rate_rps  requests  ok  throughput_rps  ttft_p50_ms  ttft_p99_ms  "
              "lag_p50_ms  lag_p99_ms  lag_max_ms")
        for rate in (float(r) for r in args.rates.split(",")):
            with tempfile.TemporaryDirectory() as tmp:
                out = Path(tmp) / "r.json"
                cli = str(Path(sys.executable).parent / "muxserve")
                subprocess.run([cli, "bench", "--base-url", url,
                                "--models", "a,b", "--max-rate", str(rate / 2), "--lengths",
                                args.lengths, "--duration-s", str(args.duration_s), "--quiet",
                                "-o", str(out)], check=True, stdout=subprocess.DEVNULL)
                r = json.loads(out.read_text())
            lag = r["bench"]["send_lag_s"]
            print(f"{rate:8g}  {r['num_requests']:8d}  {r['num_finished']:3d}  "
                  f"{r['throughput_rps']:14.1f}  {1e3 * r['ttft_s']['p50']:11.1f}  "
                  f"{1e3 * r['ttft_s']['p99']:11.1f}  {1e3 * lag['p50']:10.1f}  "
                  f"{1e3 * lag['p99']:10.1f}  {1e3 * lag['max']:10.1f}")
    finally:
        stub.terminate()
        stub.wait(timeout=10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
