"""Bench-only figure: each request's latency over its arrival time (errors marked). The
per-model bars come from ``muxserve.sim.plots.plot_result``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from muxserve.sim.metrics import RequestRecord


def plot_timeline(records: Sequence[RequestRecord], label: str, out_dir: str | Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    for m in dict.fromkeys(r.model for r in records):
        ok = [(r.arrival_s, r.finish_s, r.first_token_s or r.finish_s) for r in records
              if r.model == m and r.finish_s is not None]
        bad = [r for r in records if r.model == m and r.finish_s is None]
        pts = ax1.plot([a for a, _, _ in ok], [f - a for a, f, _ in ok], ".", label=m)
        ax2.plot([a for a, _, _ in ok], [t - a for a, _, t in ok], ".",
                 color=pts[0].get_color())
        if bad:
            ax1.plot([r.arrival_s for r in bad], [0.0] * len(bad), "x",
                     color=pts[0].get_color(), label=f"{m} errors")
    ax1.set_ylabel("latency (s)")
    if records:
        ax1.legend(fontsize="small")
    ax2.set_ylabel("TTFT (s)")
    ax2.set_xlabel("arrival (s)")
    fig.suptitle(f"{label}: per-request latency")
    fig.tight_layout()
    path = out / f"timeline_{label}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
