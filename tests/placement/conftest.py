"""A small analytic cost model for the planner tests: a real CostModel implementation with
A100-like numbers, fast and defined for every (model, share, TP)."""

from __future__ import annotations

from pathlib import Path

import pytest

from muxserve.config.devices import DeviceSpec, get_device
from muxserve.config.models import ModelArch
from muxserve.costmodel.base import CostModel

DATA = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
CHATLMSYS = DATA / "traces" / "muxserve_chatlmsys"


class AnalyticCostModel(CostModel):
    """Prefill: compute-bound, scales with share. Decode: memory-bound, saturates at 40% of
    the SMs. Plus a fixed per-job overhead."""

    def __init__(self, device: DeviceSpec | None = None, overhead_ms: float = 2.0) -> None:
        self.device = device or get_device("a100-80g")
        self.overhead_ms = overhead_ms

    def prefill_ms(self, arch: ModelArch, num_seqs: int, num_tokens: int, share: float,
                   tp: int = 1) -> float:
        flops = arch.flops_per_token() * num_tokens
        return self.overhead_ms + 1e3 * flops / (0.5 * self.device.peak_flops * share * tp)

    def decode_ms(self, arch: ModelArch, batch: int, context_tokens: int, share: float,
                  tp: int = 1) -> float:
        bytes_ = self.weight_bytes(arch, tp) + self.kv_bytes_per_token(arch, tp) * context_tokens
        bw = 0.8 * self.device.mem_bandwidth_bps * min(1.0, share / 0.4)
        flops = arch.flops_per_token() * batch / tp
        return self.overhead_ms + 1e3 * max(bytes_ / bw,
                                            flops / (0.5 * self.device.peak_flops * share))


@pytest.fixture
def cost_model() -> AnalyticCostModel:
    return AnalyticCostModel()
