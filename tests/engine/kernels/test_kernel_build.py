"""The fused kernels must build wherever a C++ toolchain is present: a broken build falls back
to the PyTorch path with only a warning, which would otherwise hide it from every test."""

from __future__ import annotations

import shutil

import pytest
import torch

from muxserve.engine import kernels


@pytest.mark.skipif(shutil.which("c++") is None, reason="no C++ compiler here")
def test_kernels_build_where_a_toolchain_exists() -> None:
    assert kernels.enabled_by_env(), "MUXSERVE_KERNELS is off in the test environment"
    assert kernels.available()
    assert kernels.ops(torch.bfloat16) is not None and kernels.ops(torch.float16) is None
