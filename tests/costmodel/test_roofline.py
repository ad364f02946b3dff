"""RooflineCostModel: held-out accuracy on the A100 profile, share/TP behaviour, memory helpers."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from muxserve.config.devices import DEVICE_PRESETS
from muxserve.config.models import MODEL_PRESETS, get_model_arch
from muxserve.costmodel import (
    A100_CALIBRATED,
    RooflineCostModel,
    RooflineParams,
    get_cost_model,
    load_profile,
)

A100 = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "profiles" / (
    "muxserve_a100_llama.json")

# Documented in docs/costmodel.md: achieved held-out (llama-13b, llama-65b) errors are
# prefill 8.9% median / 20.0% p90, decode 6.0% / 16.1%; the bounds sit a little above.
BOUNDS = {"prefill": (0.10, 0.215), "decoding": (0.07, 0.175)}


def test_held_out_error_within_documented_bound() -> None:
    from muxserve.costmodel.calibrate import relative_errors, summarize

    errs = relative_errors(RooflineCostModel("a100-80g"), load_profile(A100),
                           ["llama-13b", "llama-65b"])
    for phase, (max_median, max_p90) in BOUNDS.items():
        median, p90 = summarize(errs[phase])
        assert len(errs[phase]) > 2000
        assert median <= max_median, (phase, median)
        assert p90 <= max_p90, (phase, p90)


def test_fit_recovers_known_constants_from_synthetic_profile() -> None:
    import numpy as np

    from muxserve.costmodel import calibrate

    blocks = calibrate._blocks(load_profile(A100), ["llama-7b"])
    dev = DEVICE_PRESETS["a100-80g"]
    truth = RooflineParams(mfu=0.5, mfu_decode=0.35, bw_eff=0.8, gamma=0.9, s_sat=0.5)
    synth = [calibrate._Block(b.model, b.tp, b.phase, b.share, b.batch, b.seq,
                              np.asarray(calibrate._predict(b, dev, truth))) for b in blocks]
    got = calibrate.fit(synth, dev, restarts=1)
    assert calibrate._loss(synth, dev, got) < 1e-2  # ~2,000 entries: rms log error < 0.3%
    assert got.mfu == pytest.approx(0.5, rel=0.05)
    assert got.bw_eff == pytest.approx(0.8, rel=0.05)


def test_decode_saturates_bandwidth_prefill_scales_with_share() -> None:
    cm = RooflineCostModel("a100-80g")
    a = get_model_arch("llama-7b")
    full, half = cm.decode_ms(a, 1, 128, 1.0), cm.decode_ms(a, 1, 128, 0.5)
    assert half / full < 1.05  # s_sat ~0.38: half the SMs still saturate HBM
    assert cm.decode_ms(a, 1, 128, 0.2) / full > 1.5
    big_full, big_half = cm.prefill_ms(a, 8, 8192, 1.0), cm.prefill_ms(a, 8, 8192, 0.5)
    assert 1.6 < big_half / big_full < 2.0  # ~ 0.5 ** -gamma, gamma ~0.88


def test_tensor_parallel_divides_work_and_adds_all_reduce() -> None:
    cm = RooflineCostModel("a100-80g")
    a = get_model_arch("llama-65b")
    t1, t4 = cm.prefill_ms(a, 16, 16 * 512, 1.0, tp=1), cm.prefill_ms(a, 16, 16 * 512, 1.0, tp=4)
    assert t1 / 4 < t4 < t1 / 2


def test_calibrated_model_near_measured_points() -> None:
    cm = RooflineCostModel("a100-80g")
    a = get_model_arch("llama-7b")
    # single points carry the fit's residuals (p90 ~20%), so the tolerance is wide
    assert cm.decode_ms(a, 1, 32, 1.0) == pytest.approx(11.264, rel=0.20)
    assert cm.decode_ms(a, 128, 128 * 32, 1.0) == pytest.approx(19.666, rel=0.20)
    assert cm.prefill_ms(a, 16, 16 * 512, 1.0) == pytest.approx(608.969, rel=0.15)
    assert cm.prefill_ms(a, 1, 512, 1.0) == pytest.approx(41.027, rel=0.15)


def test_faster_device_is_faster() -> None:
    a = get_model_arch("llama-3-8b")
    a100, h200 = RooflineCostModel("a100-80g"), RooflineCostModel("h200")
    assert h200.decode_ms(a, 32, 32 * 1000, 1.0) < a100.decode_ms(a, 32, 32 * 1000, 1.0)
    assert h200.prefill_ms(a, 4, 4096, 1.0) < a100.prefill_ms(a, 4, 4096, 1.0)


def test_memory_helpers_with_tp() -> None:
    cm = get_cost_model("roofline", "a100-80g")
    a = get_model_arch("llama-7b")
    assert cm.weight_bytes(a) == a.num_params * 2
    assert cm.weight_bytes(a, tp=2) == a.num_params  # fp16 split over 2 devices
    assert cm.kv_bytes_per_token(a) == 2 * 32 * 32 * 128 * 2  # K+V x layers x heads x dim x 2 B
    assert cm.kv_bytes_per_token(a, tp=4) == cm.kv_bytes_per_token(a) // 4


def test_single_device_latency_is_prefill_plus_decode_steps() -> None:
    for cm in (get_cost_model("roofline"), get_cost_model("profile")):
        a = get_model_arch("llama-13b")
        assert cm.single_device_latency_ms(a, 100, 1) == cm.prefill_ms(a, 1, 100, 1.0)
        expect = cm.prefill_ms(a, 1, 100, 1.0) + sum(cm.decode_ms(a, 1, 100 + i, 1.0)
                                                      for i in range(1, 261))
        assert cm.single_device_latency_ms(a, 100, 261) == pytest.approx(expect)
        with pytest.raises(ValueError, match="output_tokens"):
            cm.single_device_latency_ms(a, 100, 0)


def test_default_constants_are_the_calibrated_ones() -> None:
    assert RooflineCostModel().params == A100_CALIBRATED
    assert RooflineParams() != A100_CALIBRATED


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(sorted(MODEL_PRESETS)), seqs=st.integers(1, 64),
       tokens=st.integers(1, 4096), share=st.floats(0.05, 1.0), tp=st.sampled_from([1, 2, 4, 8]))
def test_roofline_positive_and_monotone(model: str, seqs: int, tokens: int, share: float,
                                        tp: int) -> None:
    cm = RooflineCostModel()
    a = MODEL_PRESETS[model]
    tokens = max(tokens, seqs)
    p = cm.prefill_ms(a, seqs, tokens, share, tp)
    assert p > 0
    assert cm.prefill_ms(a, seqs, 2 * tokens, share, tp) >= p  # more work, not faster
    assert cm.prefill_ms(a, seqs, tokens, min(1.0, share * 1.5), tp) <= p  # more share, faster
    d = cm.decode_ms(a, seqs, tokens, share, tp)
    assert d > 0
    assert cm.decode_ms(a, seqs, 2 * tokens, share, tp) >= d
    assert cm.decode_ms(a, 2 * seqs, tokens, share, tp) >= d
    assert cm.decode_ms(a, seqs, tokens, min(1.0, share * 1.5), tp) <= d


_PROFILE = get_cost_model("profile")


@settings(max_examples=60, deadline=None)
@given(model=st.sampled_from(sorted(MODEL_PRESETS)), seqs=st.integers(1, 3000),
       tokens=st.integers(1, 10**6), share=st.floats(0.01, 1.0), tp=st.sampled_from([1, 2, 4, 8]))
def test_profile_positive_finite_anywhere(model: str, seqs: int, tokens: int, share: float,
                                          tp: int) -> None:
    # The measured table itself is not monotone (noise of ~10-30% between neighbours), and the
    # profile model reproduces it exactly, so only sanity holds everywhere.
    a = MODEL_PRESETS[model]
    tokens = max(tokens, seqs)
    for t in (_PROFILE.prefill_ms(a, seqs, tokens, share, tp),
              _PROFILE.decode_ms(a, seqs, tokens, share, tp)):
        assert 0 < t < 1e9
