"""`muxserve serve` configuration: which models, how they share the machine, server options.

A YAML file (all keys optional except models)::

    models:                      # served name -> source (or a list of sources)
      llama: smollm2-135m        # built-in name, .gguf path, Hugging Face folder, random:<preset>
      gemma:                     # or a mapping: the source and the model's placement in the unit
        source: gemma3-270m
        prefill_share: 0.5       # fractions of the unit's compute, (0, 1]
        decode_share: 0.5
        rate_rps: 2.0            # expected rate (seeds ADBS's KV quotas)
        max_num_seqs: 64
    mode: muxserve               # muxserve | spatial | temporal
    dtype: float32               # float32 | bfloat16
    kv_pool_mib: 512
    pack_weights: false          # true: each runtime worker packs a private bf16 weight copy
    server: {host: 127.0.0.1, port: 8000, max_queue: 64, request_timeout_s: 300}

Errors are ValueErrors that name the bad field and the valid choices.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

DEFAULT_MODELS = {"smollm2-135m": "smollm2-135m", "gemma3-270m": "gemma3-270m"}
MODES = ("muxserve", "spatial", "temporal")
DTYPES = ("float32", "bfloat16")
BACKENDS = ("auto", "runtime", "inproc")
MODEL_OPTIONS = {"prefill_share": float, "decode_share": float, "rate_rps": float,
                 "max_num_seqs": int}
API_KEY_ENV = "MUXSERVE_API_KEY"


@dataclass(frozen=True)
class ServerOptions:
    """HTTP-side limits. max_queue: requests per model in the server at once (waiting and
    running); past it a request gets 429. request_timeout_s: a request still unfinished after
    this long is aborted (504 or an error event). default_max_tokens: when a request gives none."""

    host: str = "127.0.0.1"
    port: int = 8000
    api_key: str | None = None
    max_queue: int = 64
    request_timeout_s: float = 300.0
    default_max_tokens: int = 256
    max_body_bytes: int = 4 * 2**20
    max_n: int = 8  # choices per request (n x prompts)
    retry_after_s: int = 1

    def __post_init__(self) -> None:
        _check_int("server.port", self.port, 0, 65535)
        _check_int("server.max_queue", self.max_queue, 1, 1_000_000)
        _check_int("server.default_max_tokens", self.default_max_tokens, 1, 10_000_000)
        _check_int("server.max_body_bytes", self.max_body_bytes, 1024, 2**31)
        _check_int("server.max_n", self.max_n, 1, 1024)
        _check_int("server.retry_after_s", self.retry_after_s, 0, 3600)
        if not isinstance(self.request_timeout_s, int | float) or self.request_timeout_s <= 0:
            raise ValueError(f"server.request_timeout_s must be a number > 0, "
                             f"got {self.request_timeout_s!r}")
        if not isinstance(self.host, str) or not self.host:
            raise ValueError(f"server.host must be a non-empty string, got {self.host!r}")


@dataclass(frozen=True)
class ServeConfig:
    """Everything `muxserve serve` needs. models: served name -> source."""

    models: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_MODELS))
    mode: str = "muxserve"
    dtype: str = "float32"
    kv_pool_mib: int = 512
    pack_weights: bool = False
    backend: str = "auto"
    # served name -> its placement options (MODEL_OPTIONS) for the runtime's ModelSpec
    model_options: Mapping[str, Mapping[str, float | int]] = field(default_factory=dict)
    server: ServerOptions = field(default_factory=ServerOptions)

    def __post_init__(self) -> None:
        if not isinstance(self.models, Mapping) or not self.models:
            raise ValueError(f"models must name at least one model, got {self.models!r}")
        for name, src in self.models.items():
            if not isinstance(name, str) or not name or not isinstance(src, str) or not src:
                raise ValueError(f"models: entry {name!r}: {src!r} must map a non-empty served "
                                 f"name to a non-empty source string")
        _check_choice("mode", self.mode, MODES)
        _check_choice("dtype", self.dtype, DTYPES)
        _check_choice("backend", self.backend, BACKENDS)
        _check_int("kv_pool_mib", self.kv_pool_mib, 1, 2**20)
        if not isinstance(self.pack_weights, bool):
            raise ValueError(f"pack_weights must be true or false, got {self.pack_weights!r}")
        for name, opts in self.model_options.items():
            if name not in self.models:
                raise ValueError(f"model_options: {name!r} is not a served model")
            for key, value in opts.items():
                kind = MODEL_OPTIONS.get(key)
                if kind is None:
                    raise ValueError(f"models: {name}: unknown field {key!r}; valid: source, "
                                     f"{', '.join(MODEL_OPTIONS)}")
                if isinstance(value, bool) or not isinstance(value, int | (kind)):
                    raise ValueError(f"models: {name}: {key} must be a {kind.__name__}, "
                                     f"got {value!r}")


def load_config(path: str | os.PathLike[str] | None) -> ServeConfig:
    """Read a YAML config (None: the embedded default: two models, muxserve mode)."""
    if path is None:
        return ServeConfig()
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        raw = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{p} is not valid YAML: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"{p}: the top level must be a mapping with at least 'models'")
    return config_from_dict(raw, where=str(p))


def config_from_dict(raw: Mapping[str, Any], where: str = "config") -> ServeConfig:
    top = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(raw) - top)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; valid: {sorted(top)}")
    kw = dict(raw)
    if "models" in kw:
        kw["models"], kw["model_options"] = _models(kw["models"], where)
    server = kw.pop("server", None) or {}
    if not isinstance(server, Mapping):
        raise ValueError(f"{where}: server must be a mapping, got {server!r}")
    valid = {f.name for f in fields(ServerOptions)}
    bad = sorted(set(server) - valid)
    if bad:
        raise ValueError(f"{where}: unknown server field(s) {bad}; valid: {sorted(valid)}")
    try:
        return ServeConfig(server=ServerOptions(**server), **kw)
    except ValueError as e:
        raise ValueError(f"{where}: {e}") from e


def _models(value: Any, where: str) -> tuple[dict[str, str], dict[str, dict[str, Any]]]:
    """({served name: source}, {served name: placement options}) from the models field."""
    if isinstance(value, str):
        value = [value]
    if isinstance(value, list):
        out: dict[str, str] = {}
        for src in value:
            if not isinstance(src, str):
                raise ValueError(f"{where}: models: each source must be a string, got {src!r}")
            if src in out:
                raise ValueError(f"{where}: models: {src!r} is listed twice; use a mapping "
                                 f"{{served name: source}} to serve it under two names")
            out[src] = src
        return out, {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{where}: models must be a list of sources or a mapping "
                         f"{{served name: source}}, got {value!r}")
    sources, options = {}, {}
    for name, entry in value.items():
        if isinstance(entry, Mapping):
            entry = dict(entry)
            if not isinstance(entry.get("source"), str):
                raise ValueError(f"{where}: models: {name}: give its source (a string), "
                                 f"got {entry.get('source')!r}")
            sources[str(name)] = entry.pop("source")
            options[str(name)] = entry
        else:
            sources[str(name)] = entry
    return sources, options


def with_overrides(cfg: ServeConfig, **server: Any) -> ServeConfig:
    """cfg with the given non-None server options (CLI flags win over the file)."""
    changes = {k: v for k, v in server.items() if v is not None}
    return replace(cfg, server=replace(cfg.server, **changes)) if changes else cfg


def _check_choice(name: str, value: Any, valid: tuple[str, ...]) -> None:
    if value not in valid:
        raise ValueError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")


def _check_int(name: str, value: Any, lo: int, hi: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name} must be an integer in [{lo}, {hi}], got {value!r}")
