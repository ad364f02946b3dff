"""PNG figures of simulation results (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any


def _plt():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_result(result: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Per-model bars: throughput against the offered rate, and SLO attainment."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    pm = result["per_model"]
    names = list(pm)
    rates = result.get("rates_rps") or {}
    x = range(len(names))
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 0.5 * len(names)), 6), sharex=True)
    ax1.bar([i - 0.2 for i in x], [rates.get(n, 0.0) for n in names], 0.4, label="offered rate")
    ax1.bar([i + 0.2 for i in x], [pm[n]["throughput_rps"] for n in names], 0.4,
            label="throughput")
    ax1.set_ylabel("req/s")
    ax1.legend()
    att = [pm[n]["slo_attainment"]["attainment"] or 0.0 for n in names]
    ax2.bar(list(x), att)
    ax2.set_ylabel(f"SLO attainment (scale {result['slo_attainment']['scale']})")
    ax2.set_ylim(0, 1.05)
    ax2.set_xticks(list(x), names, rotation=60)
    fig.suptitle(f"{result['policy']}: {result['rate_weighted_throughput_rps']:.2f} req/s "
                 "rate-weighted")
    fig.tight_layout()
    path = out / f"per_model_{result['policy']}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]


def plot_sweep(sweep: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """The paper-style figure: rate-weighted throughput and SLO attainment vs the swept value,
    one line per policy."""
    plt = _plt()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    key = sweep["sweep"]
    lines: dict[str, list[tuple[float, float, float]]] = {}
    for r in sweep["results"]:
        att = r["slo_attainment"]["attainment"]
        lines.setdefault(r["policy"], []).append(
            (r["sweep"][key], r["rate_weighted_throughput_rps"], att if att is not None else 0.0))
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for policy, pts in lines.items():
        pts.sort()
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=policy)
        ax2.plot([p[0] for p in pts], [p[2] for p in pts], marker="o", label=policy)
    ax1.set_xlabel(key)
    ax1.set_ylabel("throughput (req/s, rate-weighted)")
    ax2.set_xlabel(key)
    ax2.set_ylabel("SLO attainment")
    ax2.set_ylim(0, 1.05)
    ax1.legend()
    fig.tight_layout()
    path = out / f"sweep_{key}.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return [path]
