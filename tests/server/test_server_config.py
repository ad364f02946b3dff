"""Serve configs: the embedded default, YAML files, per-model placement options, CLI overrides;
every error names the bad field."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from muxserve.cli import build_parser
from muxserve.cli.serve import build_config
from muxserve.server.config import DEFAULT_MODELS, ServeConfig, config_from_dict, load_config
from muxserve.server.factory import unit_config


def test_default_serves_the_two_builtin_models_in_muxserve_mode() -> None:
    cfg = load_config(None)
    assert dict(cfg.models) == DEFAULT_MODELS == {"smollm2-135m": "smollm2-135m",
                                                  "gemma3-270m": "gemma3-270m"}
    assert cfg.mode == "muxserve" and cfg.server.host == "127.0.0.1" and cfg.server.port == 8000


def test_yaml_with_placement_options_becomes_a_unit_config(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("models:\n  a: random:smollm2-135m\n  b: {source: gemma3-270m, "
                    "prefill_share: 0.5, decode_share: 0.25, rate_rps: 3, max_num_seqs: 7}\n"
                    "mode: spatial\nserver: {port: 9001, max_queue: 5}\n")
    cfg = load_config(path)
    assert dict(cfg.models) == {"a": "random:smollm2-135m", "b": "gemma3-270m"}
    assert cfg.mode == "spatial" and cfg.server.port == 9001 and cfg.server.max_queue == 5
    unit = unit_config(cfg)
    assert unit.mode == "spatial"
    a, b = unit.models
    assert (a.name, a.prefill_share) == ("a", None)
    assert (b.name, b.source, b.prefill_share, b.decode_share, b.rate_rps, b.max_num_seqs) == \
        ("b", "gemma3-270m", 0.5, 0.25, 3, 7)


@pytest.mark.parametrize(("raw", "words"), [
    ({"modle": ["x"]}, ["modle", "models"]),
    ({"models": []}, ["models"]),
    ({"models": 5}, ["models"]),
    ({"models": ["a", "a"]}, ["'a'", "twice"]),
    ({"models": {"a": {"prefill_share": 0.5}}}, ["a", "source"]),
    ({"models": {"a": {"source": "x", "shares": 1}}}, ["shares", "prefill_share"]),
    ({"models": {"a": {"source": "x", "max_num_seqs": "many"}}}, ["max_num_seqs"]),
    ({"models": ["a"], "mode": "fast"}, ["mode", "fast", "temporal"]),
    ({"models": ["a"], "dtype": "int4"}, ["dtype", "bfloat16"]),
    ({"models": ["a"], "server": {"max_queue": 0}}, ["server.max_queue"]),
    ({"models": ["a"], "server": {"request_timeout_s": -1}}, ["request_timeout_s"]),
    ({"models": ["a"], "server": {"prot": 1}}, ["prot", "port"]),
    ({"models": ["a"], "server": [1]}, ["server"]),
])
def test_bad_config_names_the_field(raw: dict, words: list[str]) -> None:
    with pytest.raises(ValueError) as e:
        config_from_dict(raw, where="cfg.yaml")
    for w in words:
        assert w in str(e.value), (w, str(e.value))


def test_bad_share_is_caught_before_loading() -> None:
    cfg = config_from_dict({"models": {"a": {"source": "x", "prefill_share": 2.0}}})
    with pytest.raises(ValueError, match="a: .*prefill_share"):
        unit_config(cfg)


def test_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope.yaml"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [a\n")
    with pytest.raises(ValueError, match="not valid YAML"):
        load_config(bad)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(["serve", *argv])


def test_flags_override_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("models: [random:smollm2-135m]\nserver: {port: 9001, max_queue: 5}\n")
    monkeypatch.setenv("MUXSERVE_API_KEY", "from-env")
    cfg = build_config(parse(str(path), "--port", "0", "--mode", "temporal",
                             "--request-timeout-s", "2.5"))
    assert cfg.server.port == 0 and cfg.server.max_queue == 5
    assert cfg.server.request_timeout_s == 2.5 and cfg.mode == "temporal"
    assert cfg.server.api_key == "from-env"
    assert build_config(parse(str(path), "--api-key", "flag")).server.api_key == "flag"
    cfg = build_config(parse("--model", "m=random:smollm2-135m", "--model", "gemma3-270m"))
    assert dict(cfg.models) == {"m": "random:smollm2-135m", "gemma3-270m": "gemma3-270m"}
    with pytest.raises(ValueError, match="max_queue"):
        build_config(parse("--max-queue", "0"))


def test_server_options_are_frozen() -> None:
    cfg = ServeConfig()
    with pytest.raises(AttributeError):
        cfg.mode = "spatial"  # type: ignore[misc]
