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

    # ---- additive helpers (shared by every implementation) --------------------------------
    def single_device_latency_ms(self, arch: ModelArch, prompt_tokens: int, output_tokens: int,
                                 tp: int = 1) -> float:
        """End-to-end latency of one request alone (batch 1, full share): the paper's SLO base.

        One prefill of ``prompt_tokens`` produces the first output token; each further token is
        one decode step whose cache holds the prompt and the tokens generated so far.
        """
        check_job(prompt_tokens, prompt_tokens, 1.0, tp, what="prompt_tokens")
        if output_tokens < 1:
            raise ValueError(f"output_tokens must be >= 1, got {output_tokens}")
        total = self.prefill_ms(arch, 1, prompt_tokens, 1.0, tp)
        for i in range(1, output_tokens):
            total += self.decode_ms(arch, 1, prompt_tokens + i, 1.0, tp)
        return total


def check_job(count: int, tokens: int, share: float, tp: int, what: str = "batch") -> None:
    """Validate a job's arguments; the error names the bad value."""
    if count < 1:
        raise ValueError(f"{what} must be >= 1, got {count}")
    if tokens < 0:
        raise ValueError(f"token count must be >= 0, got {tokens}")
    if not (0.0 < share <= 1.0):
        raise ValueError(f"share must be in (0, 1] (fraction of one device), got {share}")
    if tp < 1:
        raise ValueError(f"tp must be >= 1, got {tp}")
