"""Linear projections whose bf16 weights can be reordered once into oneDNN's blocked layout.

`F.linear` on a plain bf16 [out, in] weight makes oneDNN reorder (pack) the weight on every
call; at decode sizes that reorder costs about as much as the product itself. Packing once at
load time measured 1.5-2x faster per projection here (M = 1..128 rows, SmolLM2/Gemma3 shapes,
2 threads, AVX-512 bf16) and gives bit-identical outputs (same kernel, same accumulation).
fp32 keeps `F.linear`: MKL's packed sgemm only helps at exactly the packed batch size, and
oneDNN's fp32 packing was slower at batch 1.

The packed copy is an opaque oneDNN tensor: it cannot be pickled or put in shared memory.
So packing is a separate, per-process step (`pack`), taken after a model has reached the
process that runs it, and it drops this object's reference to the plain weight.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
import torch.nn.functional as F

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


class Linear:
    """y = x @ weight.T (+ bias) for weight [out, in]."""

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        self.weight: torch.Tensor | None = weight
        self.bias = bias
        self.out_features = weight.shape[0]
        self.packed: torch.Tensor | None = None

    def pack(self) -> bool:
        """Reorder a bf16 weight into oneDNN's layout (no-op for other dtypes or builds
        without oneDNN bf16). Returns whether it packed."""
        w = self.weight
        if self.packed is not None:
            return True
        if w is None or w.dtype != torch.bfloat16 or not bf16_packing_available():
            return False
        self.packed = torch.ops.mkldnn._reorder_linear_weight(w, _PACK_ROWS_HINT)
        self.weight = None  # the packed copy replaces it in this process
        return True

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.packed is None:
            assert self.weight is not None
            return F.linear(x, self.weight, self.bias)
        y = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, x.shape[-1]), self.packed,
                                               self.bias, "none", [], "")
        return y.view(*x.shape[:-1], self.out_features)

    def __getstate__(self) -> dict[str, Any]:
        if self.packed is not None:
            raise RuntimeError("a packed Linear cannot be pickled (its oneDNN weight is "
                               "opaque); send the model to its process first, then pack()")
        return self.__dict__.copy()
