"""Simulator fidelity on the capacity sweep's runs: re-predict every measured run.

    .venv/bin/python benchmarks/compare_sweep_fidelity.py benchmarks/results/compare_sweep.json

For each (alpha, mode, rate) the sweep measured (bench_compare_sweep.py), runs the simulator on
the same request list, policy, shares and KV pool, priced by the sweep's profile, with the
current code (predictions are deterministic, so a fix to the cost model or the simulator can be
re-checked without re-measuring), stores the predictions in the rows, and writes
<sweep>.fidelity.md: predicted vs measured throughput (target within 10%) and p99 latency
(within 20%).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from bench_compare import compare_args
from bench_compare_sweep import build_parser

from muxserve.cli.compare_setup import build_setup, predict


def settings(out: dict[str, Any]) -> argparse.Namespace:
    """The sweep's flags (dtype, profile, durations, seed), from its first command line."""
    return build_parser().parse_args(shlex.split(out["command"])[1:])


def main() -> int:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/compare_sweep.json")
    out = json.loads(path.read_text())
    a = settings(out)
    lines = ["| alpha | mode | rate | req/s meas. | pred. | err | p99 s meas. | pred. | err | "
             "SLO meas. | pred. |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    score: dict[str, list[int]] = {}
    for block in out["blocks"]:
        for mode, rows in block["runs"].items():
            if mode == "vllm-cpu":
                continue
            for r in rows:
                p = predict(build_setup(compare_args(block["alpha"], r["rate"], a)), mode)
                r["predicted_throughput_rps"] = p["throughput_rps"]
                r["predicted_p99_latency_s"] = p["latency_s"]["p99"]
                r["predicted_attainment"] = p["slo_attainment"]["attainment"]
                te = (p["throughput_rps"] - r["throughput_rps"]) / r["throughput_rps"]
                le = (p["latency_s"]["p99"] - r["p99_latency_s"]) / r["p99_latency_s"]
                s = score.setdefault(mode, [0, 0, 0])
                s[0] += abs(te) <= 0.10
                s[1] += abs(le) <= 0.20
                s[2] += 1
                lines.append(f"| {block['alpha']} | {mode} | {r['rate']} | "
                             f"{r['throughput_rps']:.3f} | {p['throughput_rps']:.3f} | {te:+.0%} | "
                             f"{r['p99_latency_s']:.1f} | {p['latency_s']['p99']:.1f} | "
                             f"{le:+.0%} | {r['attainment']:.0%} | "
                             f"{p['slo_attainment']['attainment']:.0%} |")
    lines.append("")
    for mode, (t, lat, n) in score.items():
        lines.append(f"- {mode}: throughput within 10% in {t}/{n} runs, "
                     f"p99 latency within 20% in {lat}/{n}")
    path.write_text(json.dumps(out, indent=1))
    text = "\n".join(lines)
    print(text)
    path.with_suffix(".fidelity.md").write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
