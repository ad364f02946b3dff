"""Fused CPU kernels for the decode hot path, compiled once on first use.

Why: a batch-32 bf16 decode step of SmolLM2 (52 ms) spent ~17 ms in paged attention as eager
PyTorch (write K/V, gather them into a buffer, SDPA), ~13 ms in ~40 small ops per layer (norms,
RoPE, residual adds, activations) that each cost more to dispatch than to compute, and ~20 ms
in oneDNN's matmuls drawing weights at 11-14 GB/s. `csrc/` replaces them with these ops,
registered as `torch.ops.muxserve_cpu.*`:

- `decode_attention`: for each (sequence, KV head): QK-norm (Gemma3), RoPE, write the new K/V
  into the head-wise pool, then attend straight from the pool's blocks (no gather, no mask);
  a sliding window just starts the loop later.
- `add_rms_norm`: residual add (optionally of a normed branch, Gemma3's sandwich norms) and
  the next RMSNorm, one pass over the rows.
- `gated_act`: silu/gelu-tanh of the gate times up, from the fused gate_up projection.
- `amx_linear`: bf16 projections on AMX tiles (see models/linear.py), where the
  CPU and OS allow AMX (`amx_available`).

They run where the compute dtype is float32 or bfloat16; prefill attention stays on SDPA.
The reference path in plain PyTorch remains (models/common.py, attention.py) and is what runs
when the kernels are off: set MUXSERVE_KERNELS=0, or when no C++ compiler is found (a warning
says why). The build (~20 s on 2 cores, `torch.utils.cpp_extension` with ninja) lands in
<cache>/kernels/ (the model cache root, see loader/cache.py) and is reused by later
processes; `python -m muxserve.engine.kernels` builds it ahead of time.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from functools import cache
from pathlib import Path
from typing import Any

import torch

from muxserve.engine.envflags import env_switch
from muxserve.engine.loader.cache import cache_root

_CSRC = Path(__file__).with_name("csrc")
# AVX-512 machines: gcc defaults to 256-bit vectors for auto-vectorized loops
_FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"]
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16)


def enabled_by_env() -> bool:
    return env_switch("MUXSERVE_KERNELS")


_enabled = enabled_by_env()


def set_enabled(flag: bool) -> bool:
    """Turn the kernels on or off for this process (tests and benchmarks compare both paths);
    returns the previous setting."""
    global _enabled
    old, _enabled = _enabled, flag
    return old


def _put_ninja_on_path() -> None:
    """torch runs `ninja` from PATH; the pip package's binary is not there unless the venv is
    activated."""
    if shutil.which("ninja") is None:
        try:
            import ninja  # type: ignore[import-untyped]
        except ImportError:
            return
        os.environ["PATH"] = ninja.BIN_DIR + os.pathsep + os.environ.get("PATH", "")


@cache
def _load() -> Any | None:
    from torch.utils import cpp_extension

    _put_ninja_on_path()

    sources = sorted(_CSRC.glob("*.cpp"))
    # keyed by the sources (headers included), flags and torch: an edit never reuses a stale build
    digest = hashlib.sha256(repr((_FLAGS, torch.__version__)).encode())
    for f in sorted(_CSRC.iterdir()):
        digest.update(f.name.encode() + f.read_bytes())
    name = f"muxserve_cpu_{digest.hexdigest()[:12]}"
    build_dir = cache_root() / "kernels" / name
    try:
        build_dir.mkdir(parents=True, exist_ok=True)
        cpp_extension.load(name=name, sources=[str(s) for s in sources], extra_cflags=_FLAGS,
                           extra_ldflags=["-fopenmp"], build_directory=str(build_dir),
                           is_python_module=False, verbose=False)
    except (RuntimeError, OSError, ImportError) as e:  # no compiler, ninja or writable cache
        warnings.warn(f"muxserve: fused CPU kernels unavailable ({e}); using the plain "
                      f"PyTorch path (set MUXSERVE_KERNELS=0 to skip the build)", stacklevel=3)
        return None
    return torch.ops.muxserve_cpu


def ops(dtype: torch.dtype) -> Any | None:
    """`torch.ops.muxserve_cpu` when the kernels serve `dtype` here, else None."""
    if not _enabled or dtype not in SUPPORTED_DTYPES:
        return None
    return _load()


def library() -> Any:
    """`torch.ops.muxserve_cpu`, loaded whatever the on/off setting: for data already in a
    kernel's format (AMX-packed weights that reached another process). Raises if unbuildable."""
    ops_ = _load()
    if ops_ is None:
        raise RuntimeError("muxserve: the fused CPU kernels are not available in this process "
                           "but its weights were packed for them")
    return ops_


def available() -> bool:
    """Whether the kernels are on and built (builds them on first call)."""
    return _enabled and _load() is not None
