"""`muxserve.engine.profiler`: a real (tiny) model timed on pinned core shares gives a table that
the cost model's reader accepts, with positive latencies that grow with the batch."""

from __future__ import annotations

import os

import pytest

from muxserve.costmodel import ProfileCostModel, load_profile, save_profile
from muxserve.engine.profiler import ProfileSpec, measure_model, run_profile, share_cores

TINY = ("random:smollm2-135m?num_layers=4&hidden_size=256&num_heads=4&num_kv_heads=2"
        "&intermediate_size=512&vocab_size=512")


def test_share_cores_rounds_to_whole_cores() -> None:
    assert share_cores(50, [0, 1]) == [0]
    assert share_cores(100, [0, 1]) == [0, 1]
    assert share_cores(10, [0, 1]) == [0]  # at least one core
    assert share_cores(75, [0, 1, 2, 3]) == [0, 1, 2]


@pytest.mark.parametrize("bad", [dict(models=()), dict(shares_pct=(150,)), dict(batches=(0,)),
                                 dict(dtype="float8"), dict(reps=0)])
def test_spec_rejects_bad_values(bad: dict) -> None:
    kw = dict(models=(TINY,)) | bad
    with pytest.raises(ValueError):
        ProfileSpec(**kw)


@pytest.mark.slow
def test_quick_profile_roundtrips_and_grows_with_batch(tmp_path) -> None:
    spec = ProfileSpec(models=(TINY,), batches=(1, 8, 32), seq_lens=(32, 64), shares_pct=(50,),
                       reps=3, max_prefill_tokens=1024)
    entries = run_profile(spec)
    path = tmp_path / "p.json"
    save_profile(path, entries, meta={"device": "test"})
    table = load_profile(path)
    assert table.meta["device"] == "test"
    assert table.models() == ["smollm2-135m"] and table.num_gpus_of("smollm2-135m") == [1]
    got = {(e.batch, e.seq_len): e for e in table.entries()}
    assert set(got) == {(b, s) for b in (1, 8, 32) for s in (32, 64)}
    assert got[(32, 64)].prefill_ms == -1  # 2048 tokens > max_prefill_tokens: not measured
    for (b, s), e in got.items():
        assert e.decode_ms > 0 and (e.prefill_ms > 0 or b * s > 1024)
    for s in (32, 64):
        assert got[(32, s)].decode_ms > got[(1, s)].decode_ms
    assert got[(32, 32)].prefill_ms > got[(8, 32)].prefill_ms > got[(1, 32)].prefill_ms
    # the cost model prices from it, extrapolating the unmeasured prefill upwards
    cm = ProfileCostModel(path, device="cpu-2core")
    arch = __import__("muxserve.config.models", fromlist=["x"]).MODEL_PRESETS["smollm2-135m"]
    assert cm.prefill_ms(arch, 32, 32 * 64, 0.5) >= got[(32, 32)].prefill_ms


@pytest.mark.slow
def test_measure_model_pins_the_process(tmp_path) -> None:
    before = os.sched_getaffinity(0)
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
        got = pool.submit(measure_model, TINY, "float32", [min(before)], 50, (1,), (32,), 1,
                          1024, 8192).result()
    assert len(got) == 1 and got[0].sm_pct == 50 and got[0].prefill_ms > 0
    assert os.sched_getaffinity(0) == before  # the parent is not pinned
