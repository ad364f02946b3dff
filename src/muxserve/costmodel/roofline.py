"""RooflineCostModel: an analytic latency model for any device preset.

One job's latency on a compute share s of each of ``tp`` devices::

    t = overhead + smoothmax(compute, memory) + all_reduce
    compute  = FLOPs / tp / (peak_flops * mfu * f_c(s))         f_c(s) = s ** gamma
               (mfu: one constant for prefill, another for decode)
    memory   = bytes / tp / (bandwidth * bw_eff * f_m(s))       f_m(s) = min(1, s / s_sat)
    all_reduce = 2 per layer x (ar_latency * log2(tp) + payload / link_bw)   (0 when tp = 1)
    payload    = tokens * hidden * dtype_bytes * 2 (tp - 1) / tp             (ring all-reduce)
    (+ tp_step * log2(tp) per job: the host cost of driving tp workers each step)
    overhead = overhead_{prefill|decode}   (host-side work of one step; per-layer and per-sequence
               terms were tried and fitted to zero on the A100 profile)

Compute-bound prefill slows as the share shrinks (gamma = 1 would be exactly linear in SMs; the
A100 profile shows small shares are a little more efficient per SM, so gamma is fitted).
Memory-bound decode saturates bandwidth with a fraction s_sat of the compute units.
``smoothmax(a, b) = (a**k + b**k) ** (1/k)`` is the roofline's corner, rounded (k -> inf: max).

FLOPs: 2 per weight multiply-add for every input token through the layers, the LM head only for
the token each sequence emits (vLLM computes prefill logits for the last position only), plus
attention: causal 2*L*H*d*s^2 per prefill sequence, 4*L*H*d*context per decode step.
Bytes: all weights once per job, plus the KV cache written (prefill) or read (decode).

The formula functions below use only arithmetic, so the calibration script
(:mod:`muxserve.costmodel.calibrate`) evaluates the very same code on numpy arrays.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from muxserve.config.devices import DeviceSpec, get_device
from muxserve.config.models import ModelArch
from muxserve.costmodel.base import CostModel, check_job


@dataclass(frozen=True)
class RooflineParams:
    """Calibrated constants. Times in ms, bandwidths in bytes/s, efficiencies in (0, 1]."""

    mfu: float = 0.55  # fraction of peak FLOP/s a full-share prefill reaches
    mfu_decode: float = 0.45  # the same for decode (skinny matmuls, attention over the cache)
    bw_eff: float = 0.75  # fraction of peak memory bandwidth a full-share decode reaches
    gamma: float = 1.0  # f_c(s) = s ** gamma
    s_sat: float = 0.5  # f_m(s) = min(1, s / s_sat)
    smooth_k: float = 4.0  # roofline corner sharpness
    overhead_prefill_ms: float = 2.0
    overhead_decode_ms: float = 1.0
    ar_latency_ms: float = 0.05  # per all-reduce, times log2(tp)
    tp_step_ms: float = 1.0  # per job, times log2(tp): driving tp workers each step
    link_bw_bps: float = 130e9  # all-reduce bus bandwidth

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


# Fitted on the A100 profile (llama-7b and llama-30b, every TP degree, share, batch, length) by
#   .venv/bin/python -m muxserve.costmodel.calibrate
# See benchmarks/results/costmodel.md for the fit and the held-out errors (llama-13b, llama-65b).
# Result (2026-11-25): held-out median/p90 relative error: prefill 8.9%/20.0%, decode 6.0%/16.1%.
A100_CALIBRATED = RooflineParams(
    mfu=0.6324, mfu_decode=0.4265, bw_eff=0.6768, gamma=0.886, s_sat=0.3776, smooth_k=1.841,
    overhead_prefill_ms=6.215, overhead_decode_ms=3.5, ar_latency_ms=0.0236, tp_step_ms=1.458,
    link_bw_bps=96850000000.0)

# Constants per device preset; devices not listed use the A100 fit (efficiencies transfer
# roughly across NVIDIA parts; for the CPU they are a placeholder until a CPU profile is fitted).
DEVICE_CALIBRATIONS: dict[str, RooflineParams] = {"a100-80g": A100_CALIBRATED}


@dataclass(frozen=True)
class JobShape:
    """What a job does, derived from the model and the batch (scalars or numpy arrays)."""

    flops: Any
    bytes: Any
    tokens: Any  # tokens through the layers (all-reduce payload rows)
    seqs: Any  # sequences in the batch
    num_layers: Any
    hidden: Any


def prefill_shape(arch: ModelArch, num_seqs: Any, num_tokens: Any, dtype_bytes: int) -> JobShape:
    """Prefill of num_seqs prompts, num_tokens in all (equal lengths assumed for attention)."""
    lm_head = arch.vocab_size * arch.hidden_size
    layer_params = arch.num_params - lm_head * (1 if arch.tie_embeddings else 2)
    attn_width = arch.num_layers * arch.num_heads * arch.head_dim
    seq = num_tokens / num_seqs
    flops = (2 * layer_params * num_tokens + 2 * lm_head * num_seqs
             + 2 * attn_width * seq * seq * num_seqs)
    nbytes = arch.weight_bytes(dtype_bytes) + arch.kv_bytes_per_token(dtype_bytes) * num_tokens
    return JobShape(flops, nbytes, num_tokens, num_seqs, arch.num_layers, arch.hidden_size)


def decode_shape(arch: ModelArch, batch: Any, context_tokens: Any, dtype_bytes: int) -> JobShape:
    """One decode step of batch sequences whose cache holds context_tokens in all."""
    lm_head = arch.vocab_size * arch.hidden_size
    layer_params = arch.num_params - lm_head * (1 if arch.tie_embeddings else 2)
    attn_width = arch.num_layers * arch.num_heads * arch.head_dim
    flops = 2 * (layer_params + lm_head) * batch + 4 * attn_width * context_tokens
    nbytes = arch.weight_bytes(dtype_bytes) + arch.kv_bytes_per_token(dtype_bytes) * context_tokens
    return JobShape(flops, nbytes, batch, batch, arch.num_layers, arch.hidden_size)


def job_ms(shape: JobShape, share: Any, tp: Any, log2_tp: Any, device: DeviceSpec,
           p: RooflineParams, decode: bool, dtype_bytes: int) -> Any:
    """The latency formula of the module docstring. Works on floats and on numpy arrays."""
    mfu = p.mfu_decode if decode else p.mfu
    overhead_ms = p.overhead_decode_ms if decode else p.overhead_prefill_ms
    f_c = share ** p.gamma
    x = share / p.s_sat
    f_m = (1.0 + x - abs(1.0 - x)) / 2.0  # min(1, x) without branching
    compute = shape.flops / tp / (device.peak_flops * mfu * f_c) * 1e3
    memory = shape.bytes / tp / (device.mem_bandwidth_bps * p.bw_eff * f_m) * 1e3
    k = p.smooth_k
    body = (compute**k + memory**k) ** (1.0 / k)
    payload = shape.tokens * shape.hidden * dtype_bytes * 2.0 * (tp - 1) / tp
    comm = (2 * shape.num_layers * (p.ar_latency_ms * log2_tp + payload / p.link_bw_bps * 1e3)
            + p.tp_step_ms * log2_tp)
    return overhead_ms + body + comm


class RooflineCostModel(CostModel):
    """Analytic cost model for any device preset; constants default to the device's entry in
    DEVICE_CALIBRATIONS, else the A100 calibration."""

    def __init__(self, device: DeviceSpec | str = "a100-80g",
                 params: RooflineParams | None = None, dtype_bytes: int = 2):
        self.device = get_device(device) if isinstance(device, str) else device
        self.params = params or DEVICE_CALIBRATIONS.get(self.device.name, A100_CALIBRATED)
        self.dtype_bytes = dtype_bytes

    def prefill_ms(self, arch: ModelArch, num_seqs: int, num_tokens: int, share: float,
                   tp: int = 1) -> float:
        check_job(num_seqs, num_tokens, share, tp, what="num_seqs")
        shape = prefill_shape(arch, num_seqs, max(num_tokens, num_seqs), self.dtype_bytes)
        return float(job_ms(shape, share, tp, math.log2(tp), self.device, self.params,
                            False, self.dtype_bytes))

    def decode_ms(self, arch: ModelArch, batch: int, context_tokens: int, share: float,
                  tp: int = 1) -> float:
        check_job(batch, context_tokens, share, tp)
        shape = decode_shape(arch, batch, context_tokens, self.dtype_bytes)
        return float(job_ms(shape, share, tp, math.log2(tp), self.device, self.params,
                            True, self.dtype_bytes))
