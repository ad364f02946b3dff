"""Packed bf16 projections: same outputs as F.linear, and they refuse to travel packed."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from muxserve.engine.models.linear import Linear, bf16_packing_available

needs_onednn = pytest.mark.skipif(not bf16_packing_available(),
                                  reason="this torch build/CPU has no oneDNN bf16 matmul")


@needs_onednn
@pytest.mark.parametrize("rows", [1, 7, 32, 130])
@pytest.mark.parametrize("with_bias", [False, True])
def test_packed_bf16_equals_f_linear_bit_for_bit(rows: int, with_bias: bool) -> None:
    g = torch.Generator().manual_seed(rows)
    w = torch.randn(96, 64, generator=g).bfloat16()
    b = torch.randn(96, generator=g).bfloat16() if with_bias else None
    x = torch.randn(rows, 3, 64, generator=g).bfloat16()  # leading dims are flattened and restored
    want = F.linear(x, w, b)
    lin = Linear(w, b)
    assert lin.pack() and lin.weight is None
    got = lin(x)
    assert got.shape == (rows, 3, 96) and got.dtype == torch.bfloat16
    assert torch.equal(got, want)


def test_fp32_is_left_plain() -> None:
    w = torch.randn(8, 4)
    lin = Linear(w)
    assert not lin.pack() and lin.weight is w and lin.packed is None
    x = torch.randn(2, 4)
    assert torch.equal(lin(x), F.linear(x, w))


@needs_onednn
def test_a_packed_linear_cannot_be_pickled_but_a_plain_one_can() -> None:
    lin = Linear(torch.randn(8, 4).bfloat16())
    copy = pickle.loads(pickle.dumps(lin))
    assert torch.equal(copy.weight, lin.weight)
    lin.pack()
    with pytest.raises(RuntimeError, match="send the model to its process first, then pack"):
        pickle.dumps(lin)
