"""The memoised interpolation path (per-grid nested lists, cached share/batch brackets) gives
bit-identical results to the plain formula over the table's dict, and the cost model's per-arch
cache does not mix up architectures."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from muxserve.config.models import get_model_arch
from muxserve.costmodel import ProfileCostModel, ProfileTable, load_profile
from muxserve.costmodel.profile_table import _combine, _lerp_axis

A100 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "profiles" / (
    "muxserve_a100_llama.json")


def reference(t: ProfileTable, model: str, gpus: int, phase: str, sm_pct: float, batch: float,
              seq_len: float) -> float:
    """The interpolation written out over the (sm, batch, seq) -> ms dict, no caches."""
    g = t._grids[(model, gpus, phase)]
    inv = [100.0 / sm for sm in reversed(g.sm_pcts)]
    si, sj, sw = _lerp_axis(inv, 100.0 / sm_pct, clamp_low=True)
    sm_i, sm_j = g.sm_pcts[len(inv) - 1 - si], g.sm_pcts[len(inv) - 1 - sj]
    bi, bj, bw = _lerp_axis(g.batches, batch, clamp_low=True)
    qi, qj, qw = _lerp_axis(g.seq_lens, seq_len, clamp_low=True)

    def at(sm: int) -> float:
        def row(b: int) -> float:
            return _combine(g.values[(sm, b, g.seq_lens[qi])], g.values[(sm, b, g.seq_lens[qj])],
                            qw)
        return _combine(row(g.batches[bi]), row(g.batches[bj]), bw)

    return _combine(at(sm_i), at(sm_j), sw)


def test_cached_interpolation_is_bit_identical_to_the_formula() -> None:
    t = load_profile(A100, drop_outliers=True)
    rng = random.Random(0)
    keys = sorted(t._grids)
    for _ in range(3000):  # each query twice: the second one hits the caches
        m, gpus, phase = rng.choice(keys)
        sm = rng.choice([30.0, 50.0, 55.5, 100.0, 10.0, 130.0, rng.uniform(5.0, 100.0)])
        b = rng.choice([1, 3, 64, 100, 5000, rng.uniform(0.5, 3000.0)])
        q = rng.choice([1.0, 32.0, 100.5, 512.0, 4000.0, rng.uniform(0.0, 2000.0)])
        want = reference(t, m, gpus, phase, sm, b, q)
        assert t.interpolate(m, gpus, phase, sm, b, q) == want
        assert t.interpolate(m, gpus, phase, sm, b, q) == want
        assert t.interpolator(m, gpus, phase)(sm, b, q) == want


def test_interpolator_names_a_bad_grid() -> None:
    t = load_profile(A100)
    with pytest.raises(ValueError, match="no prefill profile for 'ghost'"):
        t.interpolator("ghost", 1, "prefill")
    with pytest.raises(ValueError, match="unknown phase 'decode'"):
        t.interpolator("llama-7b", 1, "decode")


def test_cost_model_cache_keeps_architectures_apart() -> None:
    cm = ProfileCostModel(A100)
    a7, a13 = get_model_arch("llama-7b"), get_model_arch("llama-13b")
    small = a7.with_(name="llama-7b-short", num_layers=16)  # unprofiled: transferred
    for _ in range(2):
        assert cm.decode_ms(a7, 8, 8 * 256, 0.5, 1) == reference(
            cm.table, "llama-7b", 1, "decoding", 50.0, 8, 256.0)
        assert cm.prefill_ms(a13, 2, 600, 1.0, 2) == reference(
            cm.table, "llama-13b", 2, "prefill", 100.0, 2, 300.0)
        assert cm.decode_ms(small, 8, 8 * 256, 0.5, 1) < cm.decode_ms(a7, 8, 8 * 256, 0.5, 1)
