"""Packed bf16 projections: oneDNN's gives F.linear's outputs bit for bit and refuses to travel
packed; the AMX tile kernel agrees with F.linear to a bf16 rounding and pickles like a tensor."""

from __future__ import annotations

import pickle

import pytest
import torch
import torch.nn.functional as F

from muxserve.engine.models.linear import Linear, amx_packing_available, bf16_packing_available

needs_onednn = pytest.mark.skipif(not bf16_packing_available(),
                                  reason="this torch build/CPU has no oneDNN bf16 matmul")
needs_amx = pytest.mark.skipif(not amx_packing_available(),
                               reason="no AMX-bf16 here, or the fused kernels are not built")


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
    assert lin.pack(amx=False) and lin.weight is None and lin.packed is not None
    got = lin(x)
    assert got.shape == (rows, 3, 96) and got.dtype == torch.bfloat16
    assert torch.equal(got, want)


@needs_amx
@pytest.mark.parametrize("n,k,rows", [(96, 64, 1), (960, 576, 32), (576, 1536, 17),
                                      (640, 2048, 130)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_amx_tiles_match_f_linear_to_a_bf16_rounding(n, k, rows, with_bias) -> None:
    g = torch.Generator().manual_seed(n + rows)
    w = torch.randn(n, k, generator=g).bfloat16()
    b = torch.randn(n, generator=g).bfloat16() if with_bias else None
    x = torch.randn(rows, k, generator=g).bfloat16()
    exact = x.double() @ w.double().t() + (b.double() if with_bias else 0)
    lin = Linear(w, b)
    assert lin.pack() and lin.tiles is not None and lin.weight is None
    got = lin(x)
    assert got.shape == (rows, n) and got.dtype == torch.bfloat16
    # one rounding of the fp32 sum to bf16 (relative 2^-8), nothing more
    assert ((got.double() - exact).abs() <= exact.abs() * 2**-8 + 1e-3).all()
    ref = F.linear(x, w, b)
    assert (got.float() - ref.float()).abs().max() <= ref.float().abs().max() * 2**-7
    logits = lin.logits(x)  # fp32 straight from the kernel: no bf16 rounding at all
    assert logits.dtype == torch.float32
    assert torch.allclose(logits.double(), exact, rtol=1e-5, atol=1e-3)


@needs_amx
def test_rows_of_a_tiled_weight_are_the_embedding_rows() -> None:
    """Tied tables: once the lm_head is tiled, the embedding reads its rows from the tiles."""
    w = torch.randn(96, 64).bfloat16()
    ids = torch.tensor([0, 95, 17, 17, 40])
    lin = Linear(w.clone())
    assert torch.equal(lin.rows(ids), w[ids])
    lin.pack()
    assert lin.tiles is not None and lin.weight is None
    assert torch.equal(lin.rows(ids), w[ids])


@needs_amx
def test_amx_packed_linear_pickles_and_keeps_its_tiles() -> None:
    lin = Linear(torch.randn(64, 32).bfloat16())
    x = torch.randn(3, 32).bfloat16()
    lin.pack()
    copy = pickle.loads(pickle.dumps(lin))
    assert copy.tiles is not None and torch.equal(copy(x), lin(x))


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
    lin.pack(amx=False)
    with pytest.raises(RuntimeError, match="send the model to its process first, then pack"):
        pickle.dumps(lin)
