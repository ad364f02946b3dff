"""Fit RooflineParams to a profile table and report relative errors (needs numpy; not imported
by the package, so loading a cost model stays instant).

    .venv/bin/python -m muxserve.costmodel.calibrate \\
        [--profile ../shared/data/profiles/muxserve_a100_llama.json] [--device a100-80g] \\
        [--train llama-7b,llama-30b] [--eval llama-13b,llama-65b]

The fit minimises the sum of squared log ratios log(predicted / measured) over every measured
prefill and decode entry of the training models (all TP degrees, shares, batches and lengths),
by coordinate search in log-parameter space with seeded restarts (no scipy needed), starting
from ``RooflineParams()``. It prints the constants as a Python literal for
``roofline.A100_CALIBRATED`` and the median/p90 relative error per phase.
"""

from __future__ import annotations

import argparse
import math
import random
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace

import numpy as np

from muxserve.config.devices import DeviceSpec, get_device
from muxserve.config.models import get_model_arch
from muxserve.costmodel.base import CostModel
from muxserve.costmodel.profile import ProfileCostModel, default_profile_path
from muxserve.costmodel.profile_table import ProfileTable, load_profile
from muxserve.costmodel.roofline import (
    RooflineCostModel,
    RooflineParams,
    decode_shape,
    job_ms,
    prefill_shape,
)

# (low, high) bounds of each parameter during the search
BOUNDS: dict[str, tuple[float, float]] = {
    "mfu": (0.05, 1.0), "mfu_decode": (0.05, 1.0), "bw_eff": (0.05, 1.0), "gamma": (0.2, 1.5),
    "s_sat": (0.05, 1.0), "smooth_k": (1.0, 30.0), "overhead_prefill_ms": (1e-3, 50.0),
    "overhead_decode_ms": (1e-3, 50.0),
    "ar_latency_ms": (1e-4, 1.0), "tp_step_ms": (1e-3, 50.0), "link_bw_bps": (1e9, 2e12),
}


@dataclass(frozen=True)
class _Block:
    """Measured entries of one (model, tp, phase) as numpy arrays."""

    model: str
    tp: int
    phase: str
    share: np.ndarray
    batch: np.ndarray
    seq: np.ndarray
    measured_ms: np.ndarray


def _blocks(table: ProfileTable, models: Sequence[str]) -> list[_Block]:
    rows: dict[tuple[str, int, str], list[tuple[float, int, int, float]]] = {}
    for e in table.entries():
        if e.model not in models:
            continue
        for phase, v in (("prefill", e.prefill_ms), ("decoding", e.decode_ms)):
            if v > 0:
                rows.setdefault((e.model, e.num_gpus, phase), []).append(
                    (e.sm_pct / 100.0, e.batch, e.seq_len, v))
    out = []
    for (m, tp, ph), r in sorted(rows.items()):
        a = np.array(r, dtype=float)
        out.append(_Block(m, tp, ph, a[:, 0], a[:, 1], a[:, 2], a[:, 3]))
    return out


def _predict(b: _Block, dev: DeviceSpec, p: RooflineParams, dtype_bytes: int = 2) -> np.ndarray:
    arch = get_model_arch(b.model)
    if b.phase == "prefill":
        shape = prefill_shape(arch, b.batch, b.batch * b.seq, dtype_bytes)
    else:
        shape = decode_shape(arch, b.batch, b.batch * b.seq, dtype_bytes)
    return np.asarray(job_ms(shape, b.share, b.tp, math.log2(b.tp), dev, p,
                             b.phase != "prefill", dtype_bytes))


def _loss(blocks: list[_Block], dev: DeviceSpec, p: RooflineParams) -> float:
    return float(sum(np.sum(np.log(_predict(b, dev, p) / b.measured_ms) ** 2) for b in blocks))


def _coordinate_search(blocks: list[_Block], dev: DeviceSpec, p: RooflineParams,
                       rounds: int) -> tuple[RooflineParams, float]:
    """Scale each parameter by exp(+-step) while the loss falls; halve the step when stuck."""
    best = _loss(blocks, dev, p)
    step = 0.5
    for _ in range(rounds):
        improved = False
        for f in fields(RooflineParams):
            lo, hi = BOUNDS[f.name]
            for sign in (1.0, -1.0):
                while True:
                    v = min(hi, max(lo, getattr(p, f.name) * math.exp(sign * step)))
                    cand = replace(p, **{f.name: v})
                    loss = _loss(blocks, dev, cand)
                    if loss >= best - 1e-12:
                        break
                    p, best, improved = cand, loss, True
        if not improved:
            step /= 2
            if step < 1e-3:
                break
    return p, best


def fit(blocks: list[_Block], dev: DeviceSpec, start: RooflineParams | None = None,
        restarts: int = 6, seed: int = 0) -> RooflineParams:
    """Least squares in log ratio: coordinate search from ``start`` and from ``restarts``
    seeded random perturbations of it (parameters are correlated, e.g. bw_eff and s_sat, so a
    single coordinate search can stall); the best result wins."""
    rng = random.Random(seed)
    best_p, best = _coordinate_search(blocks, dev, start or RooflineParams(), 200)
    for _ in range(restarts):
        jitter = {f.name: min(BOUNDS[f.name][1], max(BOUNDS[f.name][0], getattr(best_p, f.name)
                                                     * math.exp(rng.uniform(-0.7, 0.7))))
                  for f in fields(RooflineParams)}
        p, loss = _coordinate_search(blocks, dev, replace(best_p, **jitter), 200)
        if loss < best:
            best_p, best = p, loss
    return best_p


def relative_errors(cm: RooflineCostModel, table: ProfileTable, models: Sequence[str]
                    ) -> dict[str, list[float]]:
    """|predicted / measured - 1| of every measured entry of ``models``, per phase, computed
    through the public (scalar) cost-model API."""
    return _model_errors(cm, table, models)


def _model_errors(cm: CostModel, table: ProfileTable, models: Sequence[str]
                  ) -> dict[str, list[float]]:
    errs: dict[str, list[float]] = {"prefill": [], "decoding": []}
    for e in table.entries():
        if e.model not in models:
            continue
        arch = get_model_arch(e.model)
        share = e.sm_pct / 100.0
        if e.prefill_ms > 0:
            pred = cm.prefill_ms(arch, e.batch, e.batch * e.seq_len, share, e.num_gpus)
            errs["prefill"].append(abs(pred / e.prefill_ms - 1))
        if e.decode_ms > 0:
            pred = cm.decode_ms(arch, e.batch, e.batch * e.seq_len, share, e.num_gpus)
            errs["decoding"].append(abs(pred / e.decode_ms - 1))
    return errs


def transfer_errors(table: ProfileTable, known: Sequence[str], held: Sequence[str],
                    device: str = "a100-80g", params: RooflineParams | None = None
                    ) -> dict[str, list[float]]:
    """Errors of a ProfileCostModel that holds only ``known`` models' entries when it prices
    the ``held`` models' measured entries (by roofline-ratio transfer with ``params``)."""
    sub = ProfileTable([e for e in table.entries() if e.model in known], drop_outliers=True)
    cm = ProfileCostModel(sub, device, transfer=RooflineCostModel(device, params))
    return _model_errors(cm, table, held)


def summarize(errs: list[float]) -> tuple[float, float]:
    """(median, p90) of a list of relative errors."""
    return statistics.median(errs), float(np.quantile(np.array(errs), 0.9))


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m muxserve.costmodel.calibrate")
    ap.add_argument("--profile", default=str(default_profile_path()))
    ap.add_argument("--device", default="a100-80g")
    ap.add_argument("--train", default="llama-7b,llama-30b")
    ap.add_argument("--eval", default="llama-13b,llama-65b")
    args = ap.parse_args(argv)
    table, dev = load_profile(args.profile), get_device(args.device)
    train, held = args.train.split(","), args.eval.split(",")
    blocks = _blocks(table, train)
    p = fit(blocks, dev, RooflineParams())  # from the defaults, so reruns reproduce the fit
    # round to 4 significant digits: what is printed (and pasted into roofline.py) is evaluated
    p = replace(p, **{f.name: float(f"{getattr(p, f.name):.4g}") for f in fields(p)})
    print("fitted:", "RooflineParams(" + ", ".join(
        f"{f.name}={getattr(p, f.name)!r}" for f in fields(p)) + ")")
    print(f"training loss (sum sq log ratio): {_loss(blocks, dev, p):.3f} over "
          f"{sum(len(b.share) for b in blocks)} entries")
    cm = RooflineCostModel(dev, p)
    print("| set | phase | entries | median rel. err | p90 rel. err |")
    print("|---|---|---|---|---|")
    for name, models in (("train " + "+".join(train), train), ("held-out " + "+".join(held), held)):
        for phase, errs in relative_errors(cm, table, models).items():
            med, p90 = summarize(errs)
            print(f"| {name} | {phase} | {len(errs)} | {med:.1%} | {p90:.1%} |")
    for phase, errs in transfer_errors(table, train, held, args.device, p).items():
        med, p90 = summarize(errs)
        print(f"| profile transfer {'+'.join(train)} -> {'+'.join(held)} | {phase} | "
              f"{len(errs)} | {med:.1%} | {p90:.1%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
