"""Linear projections whose bf16 weights are reordered once for a faster matmul kernel.

Two packed forms, tried in this order by `pack`:
- AMX tiles (`kernels.csrc/amx_linear.cpp`, where the fused CPU kernels are built and the CPU
  has AMX-bf16): weights in 1 KB tile order, each thread streaming one contiguous run; 1.3-1.8x
  oneDNN's packed matmul at decode sizes (M <= 64) here, about even on prefill sizes; fp32
  accumulation, so not bit-identical to F.linear (rounding-level differences). A plain tensor:
  it can be pickled and shared. Needs both dims to be multiples of 32.
- oneDNN's blocked layout, otherwise (below).

`F.linear` on a plain bf16 [out, in] weight makes oneDNN reorder (pack) the weight on every
call; at decode sizes that reorder costs about as much as the product itself. Packing once at
load time measured 1.5-2x faster per projection here (M = 1..128 rows, SmolLM2/Gemma3 shapes,
2 threads, AVX-512 bf16) and gives bit-identical outputs (same kernel, same accumulation).
fp32 keeps `F.linear`: MKL's packed sgemm only helps at exactly the packed batch size, and
oneDNN's fp32 packing was slower at batch 1.

The oneDNN copy is an opaque tensor: it cannot be pickled or put in shared memory. So packing
is a separate, per-process step (`pack`), taken after a model has reached the process that
runs it, and it drops this object's reference to the plain weight.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

from muxserve.engine import kernels
from muxserve.engine.memory import empty_on_hugepages

# Rows oneDNN tunes the packed layout for; any row count works (measured gains hold 1..128).
_PACK_ROWS_HINT = 32


@cache
def bf16_packing_available() -> bool:
    """True where this torch build has oneDNN with bf16 matmul support on this CPU."""
    try:
        return bool(torch.backends.mkldnn.is_available()
                    and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def amx_packing_available() -> bool:
    """True where the fused kernels are built (and on) and the CPU/OS allow AMX-bf16."""
    k = kernels.ops(torch.bfloat16)
    return k is not None and bool(k.amx_available())


def amx_tiles(w: torch.Tensor) -> torch.Tensor:
    """w [N, K] bf16 in the AMX kernel's order, [N/16 column blocks][K/32][16 K-pairs]
    [16 columns][2], viewed as [N, K]: block nb's tile kb holds W[nb*16 + c, kb*32 + 2r + p]
    at (r, c, p), so a pair of column blocks is one contiguous run (on huge pages)."""
    n, k = w.shape
    tiles = empty_on_hugepages((n, k), torch.bfloat16)
    tiles.view(n // 16, k // 32, 16, 16, 2).copy_(
        w.view(n // 16, 16, k // 32, 16, 2).permute(0, 2, 3, 1, 4))
    return tiles


class Linear:
    """y = x @ weight.T (+ bias) for weight [out, in]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight: torch.Tensor | None = weight
        self.bias = bias
        self.out_features = weight.shape[0]
        self.packed: torch.Tensor | None = None  # oneDNN's opaque layout
        self.tiles: torch.Tensor | None = None   # AMX tile order, a plain bf16 tensor

    @property
    def is_packed(self) -> bool:
        return self.packed is not None or self.tiles is not None

    def pack(self, amx: bool = True, onednn: bool = True) -> bool:
        """Reorder a bf16 weight into AMX tile order (amx=True, where available and both dims
        are multiples of 32) or else oneDNN's layout (onednn=True); a no-op for other dtypes
        or builds without either. The packed copy replaces the plain weight. Returns whether
        it is packed."""
        w = self.weight
        if self.is_packed:
            return True
        if w is None or w.dtype != torch.bfloat16:
            return False
        if amx and w.shape[0] % 32 == 0 and w.shape[1] % 32 == 0 and amx_packing_available():
            self.tiles = amx_tiles(w)
        elif onednn and bf16_packing_available():
            self.packed = torch.ops.mkldnn._reorder_linear_weight(w, _PACK_ROWS_HINT)
        else:
            return False
        self.weight = None
        return True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self._apply(x, fp32_out=False)

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """weight[ids] [T, in] (an embedding lookup on a tied table), from the plain weight or
        the AMX tiles (oneDNN's opaque copy cannot be read)."""
        if self.weight is not None:
            return F.embedding(ids, self.weight)
        assert self.tiles is not None, "rows() needs the plain weight or AMX tiles"
        n, k = self.tiles.shape
        t = self.tiles.view(n // 16, k // 32, 16, 16, 2)  # [block, kb, K-pair, column, 2]
        return t[ids // 16, :, :, ids % 16].reshape(-1, k)  # [T, kb, pair, 2] -> [T, K]

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Like calling it, but returns fp32 (the AMX kernel writes fp32 directly)."""
        return self._apply(x, fp32_out=True).float()

    def _apply(self, x: torch.Tensor, fp32_out: bool) -> torch.Tensor:
        x2 = x.reshape(-1, x.shape[-1])
        if self.tiles is not None:  # (unpickled in another process: load the library there)
            y = kernels.library().amx_linear(x2.contiguous(), self.tiles, self.bias, fp32_out)
        elif self.packed is not None:
            y = torch.ops.mkldnn._linear_pointwise(x2, self.packed, self.bias, "none", [], "")
        else:
            assert self.weight is not None
            return F.linear(x, self.weight, self.bias)
        return y.view(*x.shape[:-1], self.out_features)

    def __getstate__(self) -> dict[str, Any]:
        if self.packed is not None:
            raise RuntimeError("a packed Linear cannot be pickled (its oneDNN weight is "
                               "opaque); send the model to its process first, then pack()")
        return self.__dict__.copy()
