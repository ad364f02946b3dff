"""The fused CPU kernels against the plain PyTorch path they replace (same inputs, same pool)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from muxserve.engine import kernels
from muxserve.engine.attention import PagedAttention, build_attn_batch
from muxserve.engine.models.common import (
    add_rms_norm,
    apply_rope,
    gated_act,
    rms_norm,
    rope_cos_sin,
    rope_inv_freq,
)
from muxserve.engine.models.gemma3 import _head_norm
from muxserve.kvcache.block_manager import KVLayout

pytestmark = pytest.mark.skipif(not kernels.available(), reason="no C++ toolchain here")

# what one bf16 rounding of values of order 1 can change, and fp32 accumulation-order noise
TOL = {torch.float32: 2e-5, torch.bfloat16: 2e-2}


@pytest.fixture
def reference_path():
    """Run the body with the kernels off (the plain PyTorch path)."""
    old = kernels.set_enabled(False)
    yield
    kernels.set_enabled(old)


def _case(dtype: torch.dtype, hq: int, hkv: int, d: int, contexts: list[int], seed: int,
          window: int = 0, layers: int = 2, block_numel: int = 2048):
    g = torch.Generator().manual_seed(seed)
    tpb = block_numel // (2 * d)
    layout = KVLayout(model_id=0, num_layers=layers, num_kv_heads=hkv, head_dim=d,
                      tokens_per_block=tpb)
    nblk = [-(-c // tpb) for c in contexts]
    num_blocks = sum(nblk) * layers * hkv + 5
    ids = (torch.randperm(num_blocks - 1, generator=g) + 1).tolist()  # scattered, block 0 unused
    tables, k = [], 0
    for nb in nblk:
        tables.append([ids[k + j * layers * hkv: k + (j + 1) * layers * hkv] for j in range(nb)])
        k += nb * layers * hkv
    pool = (torch.randn(num_blocks, block_numel, generator=g)).to(dtype)
    qkv = torch.randn(len(contexts), (hq + 2 * hkv) * d, generator=g).to(dtype)
    batch = build_attn_batch([1] * len(contexts), [c - 1 for c in contexts], tables, layout,
                             num_blocks, sliding_window=window)
    return layout, pool, qkv, batch


def _reference_decode(pool, layout, qkv, batch, layer, hq, scale, inv_freq, qk_norm, window):
    """What the models' PyTorch path does: QK-norm, RoPE, write K/V, gather, SDPA."""
    B, hkv, d = qkv.shape[0], layout.num_kv_heads, layout.head_dim
    attn = PagedAttention(pool.view(pool.shape[0], 2, -1, d), layout, hq, scale)
    cos, sin = rope_cos_sin(batch.positions, inv_freq, qkv.dtype)
    x = qkv.view(B, hq + 2 * hkv, d)
    qk = x[:, :hq + hkv] if qk_norm is None else _head_norm(x[:, :hq + hkv], qk_norm, 1e-6)
    qk = apply_rope(qk, cos, sin)
    kv = torch.cat((qk[:, hq:], x[:, hq + hkv:]), 1)
    return attn(qk[:, :hq], kv, layer, batch, attn.gather_buffer(batch), local=window > 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("hq,hkv,d", [(9, 3, 64), (4, 1, 256), (8, 2, 128), (8, 1, 64),
                                      (2, 2, 16), (6, 2, 32), (10, 1, 64)])
@pytest.mark.parametrize("window", [0, 5])
@pytest.mark.parametrize("qk_norm", [False, True])
def test_decode_attention_matches_the_pytorch_path(dtype, hq, hkv, d, window, qk_norm) -> None:
    # contexts: one token, a block boundary, odd lengths (bf16 pairs keys), several blocks
    contexts = [1, 16, 17, 3, 40, 33]
    layout, pool, qkv, batch = _case(dtype, hq, hkv, d, contexts, hq * d + window, window)
    before = pool.clone()
    inv_freq = rope_inv_freq(d, 10000.0)
    norm = (torch.rand(hq + hkv, d) + 0.5).to(dtype) if qk_norm else None
    scale = d ** -0.5
    ref_pool = pool.clone()
    want = _reference_decode(ref_pool, layout, qkv, batch, 1, hq, scale, inv_freq, norm, window)
    cos, sin = rope_cos_sin(batch.positions, inv_freq, dtype)
    attn = PagedAttention(pool.view(pool.shape[0], 2, -1, d), layout, hq, scale)
    assert attn.can_fuse(batch)
    got = attn.decode(qkv, 1, batch, cos.view(len(contexts), d).float(),
                      sin.view(len(contexts), d).float(), norm, window, 1e-6)
    assert got.shape == want.shape and got.dtype == dtype
    assert torch.allclose(got.float(), want.float(), atol=TOL[dtype], rtol=TOL[dtype])
    # both wrote the new K/V (rotated K) to the same rows; nothing else changed
    changed = (pool != before).any(-1)
    assert changed.any() and torch.equal(changed, (ref_pool != before).any(-1))
    assert torch.allclose(pool.float(), ref_pool.float(), atol=TOL[dtype], rtol=TOL[dtype])


def test_decode_attention_rejects_a_block_outside_the_pool() -> None:
    layout, pool, qkv, batch = _case(torch.float32, 4, 2, 64, [5, 9], seed=0)
    table = batch.table.clone()
    table[1, 0, 0] = pool.shape[0]  # layer 0, head 0 of sequence 1
    cos = torch.ones(2, 64)
    with pytest.raises(RuntimeError, match="outside the pool"):
        torch.ops.muxserve_cpu.decode_attention(
            qkv, pool, table, batch.positions, cos, cos, None, 0, 4, 2, 64,
            layout.tokens_per_block, 0, 0.125, 1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("normed_branch", [False, True])
def test_add_rms_norm_matches_the_pytorch_path(dtype, normed_branch) -> None:
    g = torch.Generator().manual_seed(3)
    x = torch.randn(7, 96, generator=g).to(dtype)
    y = torch.randn(7, 96, generator=g).to(dtype)
    w, yw = (torch.rand(96, generator=g) + 0.5).to(dtype), (torch.rand(96) + 0.5).to(dtype)
    x_ref = x.clone()
    h = add_rms_norm(x, y, w, 1e-6, y_weight=yw if normed_branch else None)
    x_ref += rms_norm(y, yw, 1e-6) if normed_branch else y
    assert torch.allclose(x.float(), x_ref.float(), atol=TOL[dtype], rtol=TOL[dtype])
    assert torch.allclose(h.float(), rms_norm(x_ref, w, 1e-6).float(), atol=TOL[dtype],
                          rtol=TOL[dtype])
    # no residual: just the norm, x untouched
    before = x.clone()
    assert torch.allclose(add_rms_norm(x, None, w, 1e-6).float(),
                          rms_norm(before, w, 1e-6).float(), atol=TOL[dtype], rtol=TOL[dtype])
    assert torch.equal(x, before)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("act", ["silu", "gelu_tanh"])
def test_gated_act_matches_the_pytorch_path(dtype, act) -> None:
    gate_up = (torch.randn(5, 2 * 40, generator=torch.Generator().manual_seed(4)) * 4).to(dtype)
    gate, up = gate_up.float().chunk(2, -1)
    want = (F.silu(gate) if act == "silu" else F.gelu(gate, approximate="tanh")) * up
    got = gated_act(gate_up, act)
    assert got.dtype == dtype and got.shape == (5, 40)
    assert torch.allclose(got.float(), want, atol=TOL[dtype] * 4, rtol=TOL[dtype])


def test_kernels_reject_other_dtypes_by_name() -> None:
    x = torch.zeros(2, 8, dtype=torch.float16)
    with pytest.raises(RuntimeError, match="float32 or bfloat16"):
        torch.ops.muxserve_cpu.gated_act(x, 0)
    assert kernels.ops(torch.float16) is None  # the models take the PyTorch path for fp16


def test_set_enabled_switches_the_path_off_and_back(reference_path) -> None:
    assert kernels.ops(torch.float32) is None and not kernels.available()
    kernels.set_enabled(True)
    assert kernels.ops(torch.float32) is not None
