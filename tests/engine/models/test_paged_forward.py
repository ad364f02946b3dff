"""Paged forward passes of tiny random models against transformers' own code (fast tests)."""

from __future__ import annotations

import random

import pytest
import torch
from conftest import TINY_BLOCK_NUMEL, Driver, TinyModel

from muxserve.engine.kv_pool import KVPool
from muxserve.engine.model_runner import SeqInput
from muxserve.kvcache.block_manager import BlockManager

ATOL = 1e-4


def _ids(n: int, vocab: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(vocab) for _ in range(n)]


def test_batched_prefill_of_different_lengths_matches_transformers(tiny: TinyModel,
                                                                   make_driver) -> None:
    prompts = {i: _ids(n, tiny.arch.vocab_size, i) for i, n in enumerate((1, 5, 13, 21))}
    logits = make_driver(tiny).prefill(prompts)
    assert logits.shape == (4, tiny.arch.vocab_size) and logits.dtype == torch.float32
    for row, ids in enumerate(prompts.values()):
        ref = tiny.ref_logits(ids)[-1]
        assert (logits[row] - ref).abs().max().item() < ATOL


def test_batched_decode_with_different_contexts_matches_transformers(tiny: TinyModel,
                                                                     make_driver) -> None:
    # contexts grow past the sliding window (8) and across several blocks (4 or 8 tokens)
    prompts = {i: _ids(n, tiny.arch.vocab_size, 10 + i) for i, n in enumerate((3, 9, 17))}
    steps = 12
    extra = {i: _ids(steps, tiny.arch.vocab_size, 100 + i) for i in prompts}
    d = make_driver(tiny)
    d.prefill(prompts)
    # causal: transformers' logits at position p of the full sequence are the reference there
    refs = {i: tiny.ref_logits(prompts[i] + extra[i]) for i in prompts}
    for step in range(steps):
        logits = d.extend({i: [extra[i][step]] for i in prompts})
        for row, i in enumerate(prompts):
            ref = refs[i][len(prompts[i]) + step]
            assert (logits[row] - ref).abs().max().item() < ATOL, (step, i)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fused_kernels_and_the_pytorch_path_agree(tiny: TinyModel, make_driver, dtype) -> None:
    """Decode through the C++ kernels (attention, norms, activation) and through plain PyTorch
    (`MUXSERVE_KERNELS=0`): same logits up to rounding; transformers checks the fused path."""
    from muxserve.engine import kernels
    if not kernels.available():
        pytest.skip("no C++ toolchain here")
    prompts = {i: _ids(n, tiny.arch.vocab_size, 20 + i) for i, n in enumerate((2, 9, 14))}
    extra = [{i: [(7 * step + i) % tiny.arch.vocab_size] for i in prompts} for step in range(10)]
    fused, plain = make_driver(tiny, dtype=dtype), make_driver(tiny, dtype=dtype)
    fused.prefill(prompts)
    kernels.set_enabled(False)
    try:
        plain.prefill(prompts)
        plain_logits = [plain.extend(step) for step in extra]
    finally:
        kernels.set_enabled(True)
    scale = plain_logits[0].abs().max().item()
    tol = 1e-5 if dtype == torch.float32 else 0.03
    for step, want in zip(extra, plain_logits, strict=True):
        assert (fused.extend(step) - want).abs().max().item() < tol * scale


def test_blocks_larger_than_a_gather_chunk(tiny: TinyModel, make_driver) -> None:
    """64 tokens per block: reads gather 16-token chunks, four per block (as for SmolLM2)."""
    block_numel = 2 * 64 * tiny.arch.head_dim
    prompts = {i: _ids(n, tiny.arch.vocab_size, 60 + i) for i, n in enumerate((15, 17, 70))}
    extra = {i: _ids(3, tiny.arch.vocab_size, 70 + i) for i in prompts}
    d = make_driver(tiny, num_blocks=40, block_numel=block_numel)
    first = d.prefill(prompts)
    refs = {i: tiny.ref_logits(prompts[i] + extra[i]) for i in prompts}
    for row, i in enumerate(prompts):
        assert (first[row] - refs[i][len(prompts[i]) - 1]).abs().max().item() < ATOL
    for step in range(3):
        logits = d.extend({i: [extra[i][step]] for i in prompts})
        for row, i in enumerate(prompts):
            ref = refs[i][len(prompts[i]) + step]
            assert (logits[row] - ref).abs().max().item() < ATOL, (step, i)


def test_prefill_from_a_nonzero_start_reuses_the_cached_prefix(tiny: TinyModel,
                                                               make_driver) -> None:
    ids = _ids(23, tiny.arch.vocab_size, 7)
    other = _ids(6, tiny.arch.vocab_size, 8)
    d = make_driver(tiny)
    d.prefill({0: ids[:6], 1: ids[:11], 2: other[:5]})
    # two continued prefills of different lengths and one decode in the same call
    logits = d.extend({0: ids[6:], 1: ids[11:14], 2: other[5:]})
    ref = tiny.ref_logits(ids)
    assert (logits[0] - ref[22]).abs().max().item() < ATOL
    assert (logits[1] - ref[13]).abs().max().item() < ATOL
    assert (logits[2] - tiny.ref_logits(other)[5]).abs().max().item() < ATOL


def test_batch_gives_the_same_logits_as_each_sequence_alone(tiny: TinyModel,
                                                            make_driver) -> None:
    prompts = {i: _ids(n, tiny.arch.vocab_size, 30 + i) for i, n in enumerate((2, 19, 7))}
    together = make_driver(tiny).prefill(prompts)
    for row, (i, ids) in enumerate(prompts.items()):
        alone = make_driver(tiny).prefill({i: ids})[0]
        assert (together[row] - alone).abs().max().item() < 1e-5


def test_scattered_block_ids_give_the_same_result(tiny: TinyModel, make_driver) -> None:
    """Block tables are arbitrary: reading through a shuffled table must not change anything."""
    ids = _ids(30, tiny.arch.vocab_size, 3)
    d = make_driver(tiny)
    rng = random.Random(0)
    d.bm.allocate(99, 0, 200)           # take blocks, then free them, so ours are not 0..n
    d.bm.free(99)
    free_order = list(range(d.bm.num_blocks))
    rng.shuffle(free_order)
    layout = d.runner.layout
    g, tpb = layout.blocks_per_token_block, layout.tokens_per_block
    nb = -(-len(ids) // tpb)
    table = [free_order[r * g:(r + 1) * g] for r in range(nb)]
    logits = d.runner.execute([SeqInput(ids[:25], 0, table)])
    logits2 = d.runner.execute([SeqInput(ids[25:], 25, table)])
    ref = tiny.ref_logits(ids)
    assert (logits[0] - ref[24]).abs().max().item() < ATOL
    assert (logits2[0] - ref[29]).abs().max().item() < ATOL


def test_two_models_interleaved_in_one_pool_match_each_alone(tiny_llama: TinyModel,
                                                             tiny_gemma3: TinyModel) -> None:
    """Different head_dim (32 vs 16) and layer/head counts, one pool, one block manager."""
    prompts = [{0: _ids(9, 100, 1), 1: _ids(14, 100, 2)}, {2: _ids(11, 100, 3)}]
    decodes = [{0: [5], 1: [6]}, {2: [7]}]  # per model, 6 decode steps each
    models = (tiny_llama, tiny_gemma3)

    def drivers() -> list[Driver]:
        pool, bm = KVPool(300, TINY_BLOCK_NUMEL), BlockManager(300, TINY_BLOCK_NUMEL)
        return [Driver(models[m], pool, bm, model_id=m) for m in (0, 1)]

    alone = {}
    for m in (0, 1):
        d = drivers()[m]
        alone[m] = [d.prefill(prompts[m])] + [d.extend(decodes[m]) for _ in range(6)]
    ds = drivers()
    shared: dict[int, list[torch.Tensor]] = {1: [ds[1].prefill(prompts[1])],
                                             0: [ds[0].prefill(prompts[0])]}
    for _ in range(6):                      # alternate the models step by step
        for m in (0, 1):
            shared[m].append(ds[m].extend(decodes[m]))
    ds[0].bm.check_integrity()
    assert ds[0].bm.used_blocks(0) > 0 and ds[0].bm.used_blocks(1) > 0
    for m in (0, 1):
        assert len(shared[m]) == len(alone[m]) == 7
        for a, b in zip(shared[m], alone[m], strict=True):
            assert torch.equal(a, b)


def test_bf16_stays_close_to_fp32(tiny: TinyModel, make_driver) -> None:
    prompts = {i: _ids(n, tiny.arch.vocab_size, 50 + i) for i, n in enumerate((4, 12))}
    lo32 = make_driver(tiny).prefill(prompts)
    lo16 = make_driver(tiny, dtype=torch.bfloat16).prefill(prompts)
    assert lo16.dtype == torch.float32
    scale = lo32.abs().max().item()
    assert (lo16 - lo32).abs().max().item() < 0.05 * scale


@pytest.mark.parametrize("amx", [False, True])
def test_packed_bf16_weights_change_speed_only(tiny: TinyModel, make_driver, amx) -> None:
    """Packing (see models.linear): oneDNN's layout gives logits bit-identical to the plain
    bf16 weights (Qwen2's fused QKV bias included); AMX tiles agree to bf16 rounding (their
    logits skip the final rounding to bf16)."""
    from muxserve.engine.models.linear import amx_packing_available, bf16_packing_available
    if not (amx_packing_available() if amx else bf16_packing_available()):
        pytest.skip("this build/CPU cannot pack this way")
    prompts = {i: _ids(n, tiny.arch.vocab_size, 70 + i) for i, n in enumerate((3, 9))}
    plain, packed = (make_driver(tiny, dtype=torch.bfloat16) for _ in range(2))
    assert packed.runner.pack_weights(amx=amx) == 1 + 4 * tiny.arch.num_layers
    step = {0: [5], 1: [6]}
    pairs = [(plain.prefill(prompts), packed.prefill(prompts)),
             (plain.extend(step), packed.extend(step))]
    for want, got in pairs:
        if amx:
            assert (got - want).abs().max() <= 0.02 * want.abs().max()
        else:
            assert torch.equal(got, want)


def test_arch_from_a_transformers5_config_keeps_the_rope_bases(tiny: TinyModel) -> None:
    """transformers >= 5 writes rope_parameters (per layer type for Gemma3), not rope_theta."""
    from muxserve.config.models import arch_from_hf_config

    arch = arch_from_hf_config(tiny.hf.config.to_dict())
    want = tiny.arch
    assert (arch.rope_theta, arch.num_kv_heads, arch.head_dim) == (
        want.rope_theta, want.num_kv_heads, want.head_dim)
    if want.family == "gemma3":
        assert (arch.rope_local_theta, arch.sliding_window) == (
            want.rope_local_theta, want.sliding_window)
