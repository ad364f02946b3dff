"""The muxserve planner: hand-computable cases, limits on generated inputs, baselines."""

from __future__ import annotations

import pytest
from conftest import CHATLMSYS, AnalyticCostModel
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from muxserve.config.devices import Cluster
from muxserve.config.models import get_model_arch
from muxserve.placement.estimator import Estimator, PlannerConfig
from muxserve.placement.optimizer import node_patterns
from muxserve.placement.placement_io import read_placement
from muxserve.placement.planner import evaluate, plan
from muxserve.placement.validate import limit_violations
from muxserve.placement.workload_spec import (
    ModelDemand,
    Workload,
    read_workload,
    synthetic_workload,
)

CM = AnalyticCostModel()


def _w(*models: tuple[str, str, float], cluster: str, lin: float = 100, lout: float = 200
       ) -> Workload:
    return Workload(tuple(ModelDemand(n, get_model_arch(a), r, lin, lout) for n, a, r in models),
                    Cluster.parse(cluster))


def _tpt(arch: str, batch: int, p: int, d: int, lin: int = 100, lout: int = 200) -> float:
    """The unit formula by hand, for one model alone (batch x lin <= 2048: one prefill)."""
    a = get_model_arch(arch)
    dec = CM.decode_ms(a, batch, round(batch * (lin + lout / 2)), d / 100, 1)
    pre = CM.prefill_ms(a, batch, batch * lin, p / 100, 1)
    return 1000 * batch / (lout * dec + pre)


def test_node_patterns_of_eight() -> None:
    pats = node_patterns(8, (1, 2, 4, 8))
    assert len(pats) == 10 and (8,) in pats and (4, 2, 1, 1) in pats and (1,) * 8 in pats
    assert node_patterns(6, (1, 2, 4, 8)) == [(4, 2), (4, 1, 1), (2, 2, 2), (2, 2, 1, 1),
                                              (2, 1, 1, 1, 1), (1,) * 6]


def test_one_model_on_one_device() -> None:
    pl = plan(_w(("m", "llama-7b", 2.0), cluster="1x1xa100-80g"), CM)
    assert len(pl.units) == 1
    u = pl.units[0]
    m = u.models[0]
    assert (u.num_gpus, u.node, u.devices, m.tensor_parallel_size) == (1, 0, (0,), 1)
    # the smallest decode share and the smallest batch that meet the rate, by hand
    assert m.decode_share_pct == 30 and _tpt("llama-7b", m.max_num_seqs, m.prefill_share_pct,
                                             30) >= 2.0
    assert _tpt("llama-7b", m.max_num_seqs - 1, m.prefill_share_pct, 30) < 2.0
    assert m.est_throughput_rps == pytest.approx(2.0)
    assert pl.est_objective_rps == pytest.approx(2.0) and pl.est_total_rps == pytest.approx(2.0)
    assert m.kv_fraction == 1.0


def test_two_equal_models_must_split() -> None:
    # two 30B models: each fits one A100 with short sequences, but not both on a 2-mesh
    w = _w(("a", "llama-30b", 1.0), ("b", "llama-30b", 1.0), cluster="1x2xa100-80g",
           lin=64, lout=64)
    est = Estimator(w.models, CM)
    assert est.fits(1, [0]) and not est.fits(2, [0, 1])
    pl = plan(w, CM)
    assert sorted((u.num_gpus, u.devices, len(u.models)) for u in pl.units) == [
        (1, (0,), 1), (1, (1,), 1)]
    a, b = (pl.find(n)[1] for n in "ab")
    assert (a.decode_share_pct, a.max_num_seqs, a.est_throughput_rps) == (
        b.decode_share_pct, b.max_num_seqs, b.est_throughput_rps)
    assert limit_violations(pl, w, CM) == []


def test_two_light_models_share_a_device() -> None:
    pl = plan(_w(("a", "llama-7b", 0.5), ("b", "llama-7b", 0.5), cluster="1x1xa100-80g"), CM)
    assert len(pl.units) == 1 and len(pl.units[0].models) == 2
    assert pl.units[0].decode_share_sum_pct <= 120


def test_model_too_large_is_named() -> None:
    with pytest.raises(ValueError, match=r"'big' \(llama-65b.*fit on no mesh of up to 1"):
        plan(_w(("small", "llama-7b", 1.0), ("big", "llama-65b", 1.0),
                cluster="1x1xa100-80g"), CM)
    with pytest.raises(ValueError, match=r"'big'"):
        plan(_w(("big", "llama-65b", 1.0), cluster="1x1xa100-80g"), CM, policy="spatial")


def test_no_cluster_and_bad_policy() -> None:
    w = Workload((ModelDemand("m", get_model_arch("llama-7b"), 1.0, 10, 10),))
    with pytest.raises(ValueError, match="no cluster"):
        plan(w, CM)
    with pytest.raises(ValueError, match=r"unknown policy 'fast'; valid: muxserve, spatial"):
        plan(w, CM, Cluster.parse("1x1xa100-80g"), policy="fast")


def test_chatlmsys_beats_baselines_and_is_within_limits() -> None:
    w = read_workload(sorted(CHATLMSYS.glob("*condense2000*.yaml"))[0])
    pls = {p: plan(w, CM, policy=p) for p in ("muxserve", "spatial", "temporal")}
    for pl in pls.values():
        assert limit_violations(pl, w, CM) == []
        assert sorted(pl.model_names) == sorted(m.name for m in w.models)
    mux = pls["muxserve"]
    assert mux.est_objective_rps > pls["spatial"].est_objective_rps
    assert mux.est_objective_rps > pls["temporal"].est_objective_rps
    # temporal = muxserve's meshes, full shares
    t = pls["temporal"]
    assert [sorted(m.name for m in u.models) for u in t.units] == [
        sorted(m.name for m in u.models) for u in mux.units]
    assert all((m.prefill_share_pct, m.decode_share_pct) == (100, 100)
               for u in t.units for m in u.models)
    # our placement vs the paper's for the same workload, same cost model
    paper = evaluate(read_placement(CHATLMSYS / "paper_placements.json", condense="2000"), w, CM)
    assert paper.est_objective_rps is not None and paper.est_objective_rps > 0
    assert mux.est_objective_rps >= paper.est_objective_rps * 0.95


def test_spatial_paper19_matches_paper_sizes() -> None:
    pl = plan(synthetic_workload("paper19"), CM, policy="spatial")
    sizes = {m.name: u.num_gpus for u in pl.units for m in u.models}
    w = synthetic_workload("paper19")
    by_arch = {a: {sizes[m.name] for m in w.models if m.arch.name == a}
               for a in ("llama-7b", "llama-13b", "llama-30b", "llama-65b")}
    assert by_arch == {"llama-7b": {1}, "llama-13b": {1}, "llama-30b": {4}, "llama-65b": {8}}
    assert all(len(u.models) == 1 for u in pl.units)


def test_evaluate_keeps_shares_and_caps() -> None:
    w = read_workload(sorted(CHATLMSYS.glob("*condense2000*.yaml"))[0])
    paper = read_placement(CHATLMSYS / "paper_placements.json", condense="2000")
    e = evaluate(paper, w, CM)
    assert sorted(e.model_names) == sorted(paper.model_names)
    for u in paper.units:
        for m in u.models:
            v, n = e.find(m.name)
            assert (v.num_gpus, v.node, v.devices) == (u.num_gpus, u.node, u.devices)
            assert (m.prefill_share_pct, m.decode_share_pct) == (
                n.prefill_share_pct, n.decode_share_pct)
            assert n.max_num_seqs <= m.max_num_seqs


PRESETS = ["llama-7b", "llama-13b", "llama-30b", "llama-65b", "mistral-7b", "qwen2.5-7b",
           "smollm2-135m", "llama-3-8b"]


@st.composite
def cases(draw: st.DrawFn) -> tuple[Workload, Cluster]:
    n = draw(st.integers(1, 10))
    models = tuple(
        ModelDemand(f"m{i}", get_model_arch(draw(st.sampled_from(PRESETS))),
                    draw(st.floats(0, 40)), draw(st.floats(8, 600)), draw(st.floats(1, 600)))
        for i in range(n))
    cluster = Cluster.parse(f"{draw(st.integers(1, 3))}x{draw(st.sampled_from([1, 2, 4, 8]))}"
                            f"x{draw(st.sampled_from(['a100-80g', 'l40s', 'h200']))}")
    return Workload(models, cluster), cluster


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from(["muxserve", "spatial", "temporal"]), st.booleans())
def test_never_exceeds_limits(case: tuple[Workload, Cluster], policy: str,
                              decompose: bool) -> None:
    w, cluster = case
    cfg = PlannerConfig(full_enumeration_limit=0 if decompose else 3000)
    cm = AnalyticCostModel(cluster.device)
    try:
        pl = plan(w, cm, policy=policy, config=cfg)
    except ValueError as e:
        # only a genuine lack of room may fail, and the message says which model
        assert "fit on no mesh" in str(e) or "could not place" in str(e) or "spatial:" in str(e)
        return
    assert limit_violations(pl, w, cm, config=cfg) == []
    for u in pl.units:
        for m in u.models:
            assert m.est_throughput_rps is not None
            assert 0 <= m.est_throughput_rps <= (m.rate_rps or 0) + 1e-3
    assert pl.est_total_rps is not None and pl.est_total_rps <= w.total_rate_rps + 1e-2


def test_refinement_passes_never_lose_value() -> None:
    from muxserve.placement.optimizer import (
        PlacementFailed,
        demand_order,
        greedy,
        groupings,
        improve_moves,
        node_patterns,
        refine_shares,
    )

    w = read_workload(sorted(CHATLMSYS.glob("*condense1600*.yaml"))[0])
    est = Estimator(w.models, CM)
    order = demand_order(est, range(len(w.models)))
    tried = 0
    for g in groupings(4, node_patterns(8, (1, 2, 4, 8)))[:60:3]:
        try:
            r = greedy(est, g, order)
        except PlacementFailed:
            continue
        tried += 1
        refined = refine_shares(est, r)
        moved = improve_moves(est, refined)
        assert refined.value >= r.value * (1 - 1e-12)
        assert moved.value >= refined.value * (1 - 1e-12)
        for (n, _, _), mem in zip(moved.meshes, moved.members, strict=True):
            assert sum(m[2] for m in mem) <= 120
            assert not mem or est.fits(n, [m[0] for m in mem])
    assert tried >= 5


def test_decomposition_at_scale_places_everyone() -> None:
    from muxserve.placement.workload_spec import powerlaw_demands

    sizes = ["llama-7b"] * 30 + ["llama-13b"] * 10 + ["llama-30b"] * 6 + ["llama-65b"] * 2
    w = Workload(powerlaw_demands(sizes, 0.9, 60.0, 161, 338), Cluster.parse("8x8xa100-80g"))
    cfg = PlannerConfig(full_enumeration_limit=0)
    pl = plan(w, CM, config=cfg)
    assert sorted(pl.model_names) == sorted(m.name for m in w.models)
    assert limit_violations(pl, w, CM, config=cfg) == []
    assert {u.node for u in pl.units} == set(range(8))


def test_spatial_chatlmsys_one_model_per_mesh_full_devices() -> None:
    w = read_workload(sorted(CHATLMSYS.glob("*condense2000*.yaml"))[0])
    pl = plan(w, CM, policy="spatial")
    assert pl.num_devices_used == 32 and len(pl.units) == 16
    assert all(len(u.models) == 1 for u in pl.units)
    assert all((u.models[0].prefill_share_pct, u.models[0].decode_share_pct) == (100, 100)
               for u in pl.units)
    # memory minimums on A100-80GB: 30B needs 2 devices, 65B needs 4
    for u in pl.units:
        arch = w.by_name()[u.models[0].name].arch.name
        assert u.num_gpus >= {"llama-7b": 1, "llama-13b": 1, "llama-30b": 2, "llama-65b": 4}[arch]
