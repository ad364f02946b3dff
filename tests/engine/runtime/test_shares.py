"""Compute shares and unit config: core sets per layout, MPS/green-context arithmetic, bad input.
No processes, no GPU."""

from __future__ import annotations

import os

import pytest

from muxserve.engine.runtime.config import ModelSpec, UnitConfig
from muxserve.engine.runtime.messages import step_seed
from muxserve.engine.runtime.shares import (
    MPS_ENV,
    CpuShares,
    MpsShares,
    ShareGrant,
    apply_grant,
    fixed_core_sets,
    green_context_sms,
    mps_percentage,
)
from muxserve.types import Phase


def test_flexible_gives_least_loaded_cores_and_releases() -> None:
    s = CpuShares((0, 1, 2, 3), "flexible", [0, 1])
    a = s.acquire(1, 0, 0.5)
    assert a == ShareGrant(0.5, (0, 1), 2)
    b = s.acquire(2, 1, 0.5)
    assert b.cores == (2, 3)  # the idle cores, not the busy ones
    c = s.acquire(3, 1, 0.25)
    assert c.cores == (0,) and s.load == {0: 2, 1: 1, 2: 1, 3: 1}
    assert s.in_use() == pytest.approx(5 / 4)
    for j in (1, 2, 3):
        s.release(j)
    assert s.in_use() == 0.0 and set(s.load.values()) == {0}
    assert s.acquire(4, 0, 0.01).cores == (0,)  # at least one core
    assert s.acquire(5, 0, 1.0).cores == (0, 1, 2, 3)


def test_two_cores_prefill_and_decode_of_two_models_run_side_by_side() -> None:
    s = CpuShares((0, 1), "flexible", [0, 1])
    assert s.acquire(1, 0, 0.5).cores == (0,)
    assert s.acquire(2, 1, 0.5).cores == (1,)


def test_whole_and_fixed_layouts() -> None:
    whole = CpuShares((4, 5), "whole", [0, 1])
    assert whole.acquire(1, 0, 0.1).cores == (4, 5)
    fixed = CpuShares((0, 1, 2), "fixed", [0, 1], {0: 2.0, 1: 1.0})
    assert fixed.fixed == {0: (0, 1), 1: (2,)}
    assert fixed.acquire(1, 1, 1.0).cores == (2,)  # the model's own set, whatever the share
    assert fixed.initial_grant(0, 0.5).cores == (0, 1)


@pytest.mark.parametrize(("cores", "ids", "weights", "want"), [
    ((0, 1), [0, 1, 2, 3], {}, {0: (0,), 1: (0,), 2: (1,), 3: (1,)}),  # more models than cores
    ((0, 1, 2, 3), [7, 8], {}, {7: (0, 1), 8: (2, 3)}),
    ((0, 1, 2, 3, 4), [0, 1, 2], {0: 0.6, 1: 0.2, 2: 0.2}, {0: (0, 1, 2), 1: (3,), 2: (4,)}),
    ((0,), [0], {}, {0: (0,)}),
])
def test_fixed_core_sets(cores: tuple[int, ...], ids: list[int], weights: dict[int, float],
                         want: dict[int, tuple[int, ...]]) -> None:
    got = fixed_core_sets(cores, ids, weights)
    assert got == want
    if len(ids) <= len(cores):  # disjoint and covering
        flat = [c for cs in got.values() for c in cs]
        assert sorted(flat) == sorted(cores)


def test_cpu_shares_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown share layout 'mps'"):
        CpuShares((0,), "mps", [0])
    with pytest.raises(ValueError, match="distinct"):
        CpuShares((0, 0), "whole", [0])
    with pytest.raises(ValueError, match=r"share must be in \(0, 1\]"):
        CpuShares((0,), "flexible", [0]).acquire(1, 0, 1.5)


def test_apply_grant_pins_this_process() -> None:
    before = os.sched_getaffinity(0)
    core = min(before)
    try:
        assert apply_grant(ShareGrant(0.5, (core,), 1), None) == (core,)
        assert os.sched_getaffinity(0) == {core}
        assert apply_grant(ShareGrant(0.5), (core,)) == (core,)  # no cores: unchanged
    finally:
        os.sched_setaffinity(0, before)


def test_mps_shares_env_per_worker() -> None:
    s = MpsShares({(0, Phase.PREFILL): 1.0, (0, Phase.DECODE): 0.3, (1, Phase.DECODE): 0.555},
                  pipe_dir="/tmp/mps")
    assert s.worker_env(0, Phase.PREFILL) == {MPS_ENV: "100", "CUDA_MPS_PIPE_DIRECTORY": "/tmp/mps"}
    assert s.worker_env(0, Phase.DECODE)[MPS_ENV] == "30"
    assert s.worker_env(1, Phase.DECODE)[MPS_ENV] == "56"  # rounded up
    with pytest.raises(ValueError, match="no MPS share for model 1 prefill"):
        s.worker_env(1, Phase.PREFILL)
    s.acquire(1, 0, 0.3)
    s.acquire(2, 1, 0.555)
    assert s.in_use() == pytest.approx(0.855)
    s.release(1)
    assert s.in_use() == pytest.approx(0.555)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01])
def test_gpu_share_arithmetic_rejects_bad_shares(bad: float) -> None:
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        mps_percentage(bad)
    with pytest.raises(ValueError, match=r"must be in \(0, 1\]"):
        green_context_sms(bad, 132)


def test_mps_percentage_and_green_context_sms() -> None:
    assert [mps_percentage(x) for x in (0.001, 0.3, 0.7, 1.0)] == [1, 30, 70, 100]
    assert green_context_sms(0.5, 132) == 72  # 66 SMs -> 9 granules of 8
    assert green_context_sms(0.01, 132) == 8
    assert green_context_sms(1.0, 132) == 132
    assert green_context_sms(0.3, 108, granularity=2) == 34


def test_unit_config_validation() -> None:
    m = (ModelSpec("a", "random:smollm2-135m"),)
    with pytest.raises(ValueError, match="unknown mode 'mux'; valid: muxserve, spatial, temporal"):
        UnitConfig(m, mode="mux")
    with pytest.raises(ValueError, match="unknown dtype"):
        UnitConfig(m, dtype="int8")
    with pytest.raises(ValueError, match="not both"):
        UnitConfig(m, num_kv_blocks=10, kv_pool_bytes=10)
    with pytest.raises(ValueError, match="duplicate served model names"):
        UnitConfig(m + m)
    with pytest.raises(ValueError, match="not available"):
        UnitConfig(m, cores=(10_000,))
    with pytest.raises(ValueError, match="decode_share"):
        ModelSpec("a", "x", decode_share=0.0)
    cfg = UnitConfig.of({"a": "x", "b": "y"}, mode="spatial")
    assert (cfg.policy, cfg.share_layout) == ("spatial", "fixed")
    assert cfg.unit_cores() == tuple(sorted(os.sched_getaffinity(0)))


def test_step_seed_differs_per_step_and_is_stable() -> None:
    assert step_seed(7, 0) != step_seed(7, 1) != step_seed(8, 1)
    assert step_seed(7, 3) == step_seed(7, 3)
    assert 0 <= step_seed(2**62, 10**9) < 2**63


def test_fixed_core_sets_keep_one_core_each_under_skewed_weights() -> None:
    got = fixed_core_sets((0, 1, 2, 3), [0, 1, 2, 3], {0: 100.0, 1: 0.01, 2: 0.01, 3: 0.01})
    assert got == {0: (0,), 1: (1,), 2: (2,), 3: (3,)}
    got = fixed_core_sets((0, 1, 2, 3), [0, 1, 2], {0: 100.0, 1: 0.01, 2: 0.01})
    assert got == {0: (0, 1), 1: (2,), 2: (3,)}
