"""The one small interface every cost model implements.

Shares are fractions of one device's compute in (0, 1] (a GPU's SM percentage / 100, a CPU's
core fraction). Latencies are for one job (one prefill batch or one decode step) on a mesh of
``tp`` devices running the model with tensor parallelism ``tp``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from muxserve.config.devices import DeviceSpec
from muxserve.config.models import ModelArch


class CostModel(ABC):
    """Latency and memory of jobs on one device preset."""

    device: DeviceSpec
    dtype_bytes: int = 2

    @abstractmethod
    def prefill_ms(self, arch: ModelArch, num_seqs: int, num_tokens: int, share: float,
                   tp: int = 1) -> float:
        """One prefill batch: ``num_seqs`` prompts totalling ``num_tokens`` tokens."""

    @abstractmethod
    def decode_ms(self, arch: ModelArch, batch: int, context_tokens: int, share: float,
                  tp: int = 1) -> float:
        """One decode step of ``batch`` sequences whose KV cache holds ``context_tokens`` in all."""

    def weight_bytes(self, arch: ModelArch, tp: int = 1) -> int:
        """Weight bytes on each device of the mesh."""
        return arch.weight_bytes(self.dtype_bytes) // tp

    def kv_bytes_per_token(self, arch: ModelArch, tp: int = 1) -> int:
        """KV bytes one token takes on each device of the mesh."""
        return arch.kv_bytes_per_token(self.dtype_bytes) // tp
