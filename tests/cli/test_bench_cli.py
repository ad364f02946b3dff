"""`muxserve bench` end to end against real stub servers on 127.0.0.1: the result schema is
`muxserve simulate`'s plus bench's fields, the request list is simulate's, endpoints per model."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from muxserve.bench.stub import StubConfig, StubServer
from muxserve.cli import build_parser, main
from muxserve.cli.bench import build_trace, workload_rates
from muxserve.cli.simulate import SHAREGPT, adjusted_rates, load_workload
from muxserve.sim.workload import parse_lengths, synthesize

WORKLOAD = {
    "cluster": {"nnodes": 1, "ngpus_per_node": 2},
    "models": [{"name": "a", "model": "llama-7b", "rate": 3.0},
               {"name": "b", "model": "/ckpt/huggyllama/llama-7b", "rate": 2.0}],
    "avg_prompt_len": 32, "avg_output_len": 16,
}
PLACEMENT = {
    "policy": "muxserve",
    "units": [{"num_gpus": 1, "models": [
        {"name": "a", "model": "llama-7b", "tensor_parallel_size": 1,
         "mps_percentage": [100, 50], "max_num_seqs": 64},
        {"name": "b", "model": "llama-7b", "tensor_parallel_size": 1,
         "mps_percentage": [100, 50], "max_num_seqs": 64}]}],
}
FLOW = ["--lengths", "fixed:32,6", "--duration-s", "1", "--seed", "3", "--quiet"]
BENCH_ONLY = {"errors", "base_url", "slo_baseline", "trace", "bench"}
SIM_ONLY = {"sim", "cost_model", "placement_policy", "units"}


def _write(tmp_path: Path, name: str, data: object) -> str:
    p = tmp_path / name
    p.write_text(yaml.safe_dump(data))
    return str(p)


def test_same_seed_same_request_list_as_simulate(tmp_path: Path) -> None:
    w = _write(tmp_path, "w.yaml", WORKLOAD)
    args = build_parser().parse_args(["bench", w, "--base-url", "http://x", "-o", "r.json",
                                      "--alpha", "1.0", *FLOW])
    rates, _ = workload_rates(args)
    trace, offered, _ = build_trace(args, rates)
    sim_rates = adjusted_rates(load_workload(w, None), 1.0, None, 1.0)
    assert rates == offered == sim_rates
    assert trace == synthesize(sim_rates, 1.0, parse_lengths("fixed:32,6", SHAREGPT), 3)
    assert build_trace(args, rates)[0] == trace
    args.seed = 5
    assert build_trace(args, rates)[0] != trace


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_result_schema_is_simulates_plus_bench_fields(tmp_path: Path) -> None:
    w = _write(tmp_path, "w.yaml", WORKLOAD)
    pl = _write(tmp_path, "p.yaml", PLACEMENT)
    sim_out, bench_out = tmp_path / "sim.json", tmp_path / "bench.json"
    assert main(["simulate", w, "--placement", pl, "-o", str(sim_out), *FLOW]) == 0
    cfg = StubConfig(first_token_delay_s=0.02, token_delay_s=0.005)
    with StubServer(cfg) as url:
        assert main(["bench", w, "--base-url", url, "-o", str(bench_out), *FLOW]) == 0
    sim, bench = json.loads(sim_out.read_text()), json.loads(bench_out.read_text())
    assert set(bench) - set(sim) == BENCH_ONLY
    assert set(sim) - set(bench) == SIM_ONLY
    assert set(bench["per_model"]["a"]) == set(sim["per_model"]["a"])
    # the same request list: simulate served every request, so its counts are the trace's
    for m in ("a", "b"):
        n = sim["per_model"][m]["num_requests"]
        assert bench["per_model"][m]["num_requests"] == n == cfg.counts[m] > 0
        assert bench["per_model"][m]["num_finished"] == n
    assert bench["policy"] == "bench" and bench["errors"]["total"] == 0
    assert bench["base_url"] == {"a": url, "b": url}
    assert bench["token_throughput_tps"] == pytest.approx(6 * bench["throughput_rps"])


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_endpoint_per_model_baseline_goodput_and_plots(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]
                                                       ) -> None:
    out = tmp_path / "r.json"
    c1 = StubConfig(0.02, 0.005, served=("m1",))
    c2 = StubConfig(0.02, 0.005, served=("served-b",), reject_models=frozenset({"served-b"}))
    with StubServer(c1) as u1, StubServer(c2) as u2:
        assert main(["bench", "--base-url", f"a={u1}", "--base-url", f"b={u2}/v1",
                     "--model-rates", "a=4,b=2", "--served-name", "a=m1,b=served-b",
                     "--measure-baseline", "--baseline-requests", "1", "--slo-scale", "5,10",
                     "--ttft-slo-s", "0.5", "--tpot-slo-s", "0.1", "--label", "stub",
                     "--plot", str(tmp_path / "figs"), "-o", str(out),
                     "--save-requests", str(tmp_path / "req.jsonl"), *FLOW]) == 0
    r = json.loads(out.read_text())
    rows = [json.loads(x) for x in (tmp_path / "req.jsonl").read_text().splitlines()]
    assert len(rows) == r["num_requests"]
    assert {row["error"] for row in rows if row["model"] == "b"} == {"http_429"}
    assert all(row["output_tokens"] == row["max_tokens"] == 6 and row["finish_s"] > 0
               for row in rows if row["model"] == "a")
    n_a, n_b = r["per_model"]["a"]["num_requests"], r["per_model"]["b"]["num_requests"]
    assert c1.counts == {"m1": n_a + 1} and c2.counts == {"served-b": n_b + 1}  # +1 baseline
    assert r["per_model"]["a"]["slo_attainment"]["by_scale"] == {"5.0": 1.0, "10.0": 1.0}
    assert r["per_model"]["b"]["slo_attainment"]["attainment"] is None  # 429: no baseline
    assert r["errors"]["per_model"]["b"]["by_kind"]["http_429"] == n_b == r["errors"]["total"]
    assert r["slo_attainment"]["attainment"] == pytest.approx(n_a / (n_a + n_b))
    assert r["per_model"]["a"]["goodput_rps"] == r["per_model"]["a"]["throughput_rps"] > 0
    assert r["slo_baseline"]["source"] == "measured" and set(r["slo_baseline"]["per_model"]) == {
        "a"}
    assert r["base_url"] == {"a": u1, "b": f"{u2}/v1"}
    for png in ("per_model_stub.png", "timeline_stub.png"):
        assert (tmp_path / "figs" / png).stat().st_size > 1000
    text = capsys.readouterr()
    assert "no SLO baseline for 'b'" in text.err and "SLO@5" in text.out


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_sweep_runs_each_load_with_one_baseline(tmp_path: Path) -> None:
    out = tmp_path / "s.json"
    cfg = StubConfig(0.01, 0.002)
    with StubServer(cfg) as url:
        assert main(["bench", "--base-url", url, "--models", "a,b", "--max-rate", "4",
                     "--alpha", "1", "--sweep", "rate-scale=0.5,1", "--lengths", "fixed:8,3",
                     "--duration-s", "0.6", "--measure-baseline", "--baseline-requests", "1",
                     "--seed", "3", "--quiet", "--plot", str(tmp_path / "figs"),
                     "-o", str(out)]) == 0
    s = json.loads(out.read_text())
    assert s["sweep"] == "rate-scale" and s["values"] == [0.5, 1.0]
    lo, hi = s["results"]
    assert [lo["sweep"], hi["sweep"]] == [{"rate-scale": 0.5}, {"rate-scale": 1.0}]
    assert hi["rates_rps"] == {"a": 4.0, "b": 2.0} and lo["rates_rps"] == {"a": 2.0, "b": 1.0}
    assert lo["slo_baseline"] == hi["slo_baseline"] is not None
    sent = lo["num_requests"] + hi["num_requests"]
    assert lo["num_requests"] > 0 and hi["num_requests"] > 0
    assert sum(cfg.counts.values()) == sent + 2  # + one baseline request per model
    assert lo["num_finished"] == lo["num_requests"] and hi["num_finished"] == hi["num_requests"]
    assert (tmp_path / "figs" / "sweep_rate-scale.png").stat().st_size > 1000


@pytest.mark.parametrize("argv, match", [
    (["--base-url", "localhost:1", "--models", "a", "--max-rate", "1"], "http://"),
    (["--base-url", "http://h", "--models", "a"], "needs --max-rate"),
    (["--base-url", "http://h", "--model-rates", "a=x"], "must be a number"),
    (["--base-url", "b=http://h", "--models", "a", "--max-rate", "1"], "not in the workload"),
    (["--base-url", "http://h"], "name the models"),
])
def test_bad_input_exits_2_naming_the_problem(argv: list[str], match: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", *argv, "-o", str(tmp_path / "r.json"), "--dry-run"]) == 2
    assert match in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.timeout(30)
def test_preflight_rejects_unserved_models_and_dead_endpoints(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = StubConfig(served=("smollm2-135m",))
    with StubServer(cfg) as url:
        argv = ["bench", "--base-url", url, "--models", "smollm2-135m,gemma3-270m",
                "--max-rate", "1", "-o", str(tmp_path / "r.json"), "--quiet"]
        assert main(argv) == 2
    assert "does not serve ['gemma3-270m']; it serves ['smollm2-135m']" in capsys.readouterr().err
    assert sum(cfg.counts.values()) == 0  # nothing was sent
    assert main([*argv[:2], "http://127.0.0.1:9", *argv[3:]]) == 2
    assert "cannot reach http://127.0.0.1:9/v1/models" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.timeout(60)
def test_ctrl_c_writes_the_part_that_was_sent(tmp_path: Path) -> None:
    out = tmp_path / "r.json"
    cli = Path(sys.executable).parent / "muxserve"
    with StubServer(StubConfig(0.02, 0.005)) as url:
        proc = subprocess.Popen([str(cli), "bench", "--base-url", url, "--models", "a",
                                 "--max-rate", "20", "--lengths", "fixed:8,4", "--duration-s",
                                 "30", "--quiet", "-o", str(out)], stderr=subprocess.PIPE,
                                text=True)
        assert proc.stderr is not None
        planned = proc.stderr.readline()  # "bench: N requests over 30 s: ..." once started
        time.sleep(0.8)
        proc.send_signal(signal.SIGINT)
        err = proc.communicate(timeout=20)[1]
    assert proc.returncode == 130, err
    r = json.loads(out.read_text())
    assert r["bench"]["interrupted"] is True
    total = int(planned.split()[1])
    assert 4 <= r["num_requests"] < total / 3  # about 0.8 s x 20 req/s of 30 s
    assert r["num_finished"] + r["errors"]["by_kind"]["cancelled"] == r["num_requests"]
    assert "interrupted after" in err


def test_dry_run_sends_nothing_and_counts_requests(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "--base-url", "http://127.0.0.1:9", "--models", "a,b", "--max-rate",
                 "2", "--trace", "azure-code", "--duration-s", "600", "--max-prompt-tokens",
                 "1024", "-o", str(tmp_path / "r.json"), "--dry-run"]) == 0
    err = capsys.readouterr().err
    assert "requests over 600 s: a " in err and not (tmp_path / "r.json").exists()
