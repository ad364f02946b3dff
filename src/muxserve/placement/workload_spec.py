"""Workload specs: which models to serve, at what request rate, with what request lengths.

Reads the original MuxServe workload YAMLs as they are::

    cluster: {nnodes: 4, ngpus_per_node: 8}
    models:
    - {name: llm-1, model: /mnt/.../huggyllama/llama-13b, rate: 19.5}
    avg_prompt_len: 100.2
    avg_output_len: 261.3

The model size is only in the path (``.../llama-13b``), so ``model`` is resolved to a preset by
searching the text for a preset name (or ``<N>b`` for LLaMA-1 sizes); a path to a Hugging Face
``config.json`` also works. Our optional extras: ``cluster.device`` (a device preset, default
a100-80g) and per-model ``avg_prompt_len`` / ``avg_output_len`` overrides.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from muxserve.config.devices import Cluster, get_device
from muxserve.config.models import MODEL_PRESETS, ModelArch, arch_from_hf_config

DEFAULT_DEVICE = "a100-80g"
# The paper's 19-model synthetic set, most popular first, in the order of MuxServe's benchmark
# script: 12 x 7B, then 4 x 13B, 2 x 30B, 1 x 65B (the 7B models are the popular ones).
PAPER19_SIZES = ("llama-7b",) * 12 + ("llama-13b",) * 4 + ("llama-30b",) * 2 + ("llama-65b",)
SYNTHETIC = ("paper19",)


@dataclass(frozen=True)
class ModelDemand:
    """One LLM to serve: its architecture and its average load.

    model: the text the workload named it by (a preset name or a checkpoint path); placements
    write it back unchanged so the original system's launcher can still read them.
    """

    name: str
    arch: ModelArch
    rate_rps: float
    avg_prompt_tokens: float
    avg_output_tokens: float
    model: str = ""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("model name must be non-empty")
        for f in ("rate_rps", "avg_prompt_tokens", "avg_output_tokens"):
            v = getattr(self, f)
            if not isinstance(v, int | float) or not math.isfinite(v) or v < 0:
                raise ValueError(f"model {self.name!r}: {f} must be a finite number >= 0, "
                                 f"got {v!r}")
        if self.avg_output_tokens < 1:
            raise ValueError(f"model {self.name!r}: avg_output_tokens must be >= 1, "
                             f"got {self.avg_output_tokens!r}")
        if not self.model:
            object.__setattr__(self, "model", self.arch.name)

    @property
    def compute_demand(self) -> float:
        """MuxServe's sort key: rate x model size (parameters)."""
        return self.rate_rps * self.arch.num_params


@dataclass(frozen=True)
class Workload:
    """Models with their rates, and the cluster the workload file asks for (None if absent)."""

    models: tuple[ModelDemand, ...]
    cluster: Cluster | None = None
    source: str = ""

    def __post_init__(self) -> None:
        if not self.models:
            raise ValueError("workload has no models")
        seen: set[str] = set()
        for m in self.models:
            if m.name in seen:
                raise ValueError(f"duplicate model name {m.name!r} in workload")
            seen.add(m.name)

    @property
    def total_rate_rps(self) -> float:
        return sum(m.rate_rps for m in self.models)

    def by_name(self) -> dict[str, ModelDemand]:
        return {m.name: m for m in self.models}


# ---- model resolution -------------------------------------------------------------------------
_PRESETS_LONGEST_FIRST = sorted(MODEL_PRESETS, key=len, reverse=True)


def resolve_arch(text: str, base_dir: Path | None = None) -> ModelArch:
    """A preset name, a path containing one (``.../huggyllama/llama-13b``), a bare LLaMA-1 size
    (``13b``), or a Hugging Face ``config.json`` path. The error lists the known presets."""
    s = str(text).strip()
    if s in MODEL_PRESETS:
        return MODEL_PRESETS[s]
    if s.endswith(".json"):
        p = Path(s) if base_dir is None or Path(s).is_absolute() else base_dir / s
        if p.is_file():
            return arch_from_hf_config(json.loads(p.read_text()), name=p.parent.name or p.stem)
    low = s.lower()
    for name in _PRESETS_LONGEST_FIRST:
        # a preset name bounded by non-alphanumerics, so 'llama-3-8b' never matches 'llama-3-80b'
        if re.search(rf"(?<![a-z0-9]){re.escape(name)}(?![a-z0-9.])", low):
            return MODEL_PRESETS[name]
    m = re.fullmatch(r"(\d+)b", low) or re.search(r"llama-(\d+)b(?![a-z0-9])", low)
    if m and f"llama-{m.group(1)}b" in MODEL_PRESETS:
        return MODEL_PRESETS[f"llama-{m.group(1)}b"]
    raise ValueError(f"unknown model {s!r}: no preset name in it; known presets: "
                     f"{', '.join(sorted(MODEL_PRESETS))} (or give a config.json path)")


# ---- reading ----------------------------------------------------------------------------------
def _number(d: Mapping[str, Any], key: str, where: str, default: float | None = None) -> float:
    if key not in d or d[key] is None:
        if default is not None:
            return default
        raise ValueError(f"{where}: missing field {key!r}")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise ValueError(f"{where}: field {key!r} must be a number, got {v!r}")
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"{where}: field {key!r} must be a finite number >= 0, got {v!r}")
    return float(v)


def _cluster(d: Any, where: str) -> Cluster | None:
    if d is None:
        return None
    if isinstance(d, str):
        return Cluster.parse(d)
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: field 'cluster' must be a mapping, got {d!r}")
    nodes = int(_number(d, "nnodes", f"{where} cluster"))
    per = int(_number(d, "ngpus_per_node", f"{where} cluster"))
    if nodes < 1 or per < 1:
        raise ValueError(f"{where}: cluster nnodes and ngpus_per_node must be >= 1, "
                         f"got {nodes} and {per}")
    return Cluster(nodes, per, get_device(str(d.get("device", DEFAULT_DEVICE))))


def workload_from_dict(d: Mapping[str, Any], where: str = "workload",
                       base_dir: Path | None = None) -> Workload:
    """Build a Workload from the original YAML schema (already parsed)."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where}: expected a mapping at the top level, got {type(d).__name__}")
    models = d.get("models")
    if not isinstance(models, Sequence) or isinstance(models, str) or not models:
        raise ValueError(f"{where}: missing field 'models' (a non-empty list)")
    prompt = d.get("avg_prompt_len")
    output = d.get("avg_output_len")
    out: list[ModelDemand] = []
    for i, md in enumerate(models):
        if not isinstance(md, Mapping):
            raise ValueError(f"{where}: models[{i}] must be a mapping, got {md!r}")
        name = str(md.get("name") or "")
        mwhere = f"{where}: model {name!r}" if name else f"{where}: models[{i}]"
        if not name:
            raise ValueError(f"{mwhere}: missing field 'name'")
        if "model" not in md:
            raise ValueError(f"{mwhere}: missing field 'model'")
        try:
            arch = resolve_arch(str(md["model"]), base_dir)
        except ValueError as e:
            raise ValueError(f"{mwhere}: {e}") from None
        rate = md.get("rate")
        if isinstance(rate, int | float) and not isinstance(rate, bool) and rate < 0:
            raise ValueError(f"{mwhere}: rate must be >= 0 req/s, got {rate!r}")
        out.append(ModelDemand(
            name=name, arch=arch, rate_rps=_number(md, "rate", mwhere),
            avg_prompt_tokens=_number(md, "avg_prompt_len", mwhere,
                                      _number(d, "avg_prompt_len", where) if prompt is not None
                                      else None),
            avg_output_tokens=_number(md, "avg_output_len", mwhere,
                                      _number(d, "avg_output_len", where) if output is not None
                                      else None),
            model=str(md["model"])))
    return Workload(tuple(out), _cluster(d.get("cluster"), where), where)


def read_workload(path: str | Path) -> Workload:
    """Read a workload YAML (or JSON) file; errors name the file, the model and the field."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"workload file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"{p}: not valid YAML: {e}") from None
    return workload_from_dict(data, where=str(p), base_dir=p.parent)


def workload_to_dict(w: Workload) -> dict[str, Any]:
    """The original schema (per-model lengths written only where they differ)."""
    prompt = w.models[0].avg_prompt_tokens
    output = w.models[0].avg_output_tokens
    d: dict[str, Any] = {}
    if w.cluster is not None:
        d["cluster"] = {"nnodes": w.cluster.num_nodes,
                        "ngpus_per_node": w.cluster.devices_per_node,
                        "device": w.cluster.device.name}
    models = []
    for m in w.models:
        md: dict[str, Any] = {"name": m.name, "model": m.model, "rate": m.rate_rps}
        if m.avg_prompt_tokens != prompt:
            md["avg_prompt_len"] = m.avg_prompt_tokens
        if m.avg_output_tokens != output:
            md["avg_output_len"] = m.avg_output_tokens
        models.append(md)
    d["models"] = models
    d["avg_prompt_len"] = prompt
    d["avg_output_len"] = output
    return d


# ---- synthetic workloads ----------------------------------------------------------------------
def powerlaw_demands(sizes: Sequence[str], alpha: float, max_rate_rps: float,
                     avg_prompt_tokens: float, avg_output_tokens: float,
                     prefix: str = "llm-") -> tuple[ModelDemand, ...]:
    """rate_i = max_rate x (i+1)^-alpha for the i-th model of ``sizes`` (most popular first)."""
    if alpha < 0:
        raise ValueError(f"alpha must be >= 0, got {alpha}")
    if max_rate_rps <= 0:
        raise ValueError(f"max rate must be > 0 req/s, got {max_rate_rps}")
    return tuple(
        ModelDemand(f"{prefix}{i}", resolve_arch(s), max_rate_rps * (i + 1) ** -alpha,
                    avg_prompt_tokens, avg_output_tokens, model=s)
        for i, s in enumerate(sizes))


def synthetic_workload(name: str = "paper19", alpha: float = 0.9, max_rate_rps: float = 40.0,
                       cluster: Cluster | None = None, avg_prompt_tokens: float = 161.0,
                       avg_output_tokens: float = 338.0) -> Workload:
    """The paper's synthetic set. Default lengths are the ShareGPT means MuxServe's planner uses.

    The default cluster is the paper's 4 x 8 A100-80GB."""
    if name != "paper19":
        raise ValueError(f"unknown synthetic workload {name!r}; valid: {', '.join(SYNTHETIC)}")
    if cluster is None:
        cluster = Cluster(4, 8, get_device(DEFAULT_DEVICE))
    models = powerlaw_demands(PAPER19_SIZES, alpha, max_rate_rps, avg_prompt_tokens,
                              avg_output_tokens)
    return Workload(models, cluster, f"synthetic:{name}:alpha={alpha}:max_rate={max_rate_rps}")
