"""ProfileCostModel: latencies looked up (and interpolated) in a measured profile table."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from muxserve.config.devices import DeviceSpec, get_device
from muxserve.config.models import MODEL_PRESETS, ModelArch
from muxserve.costmodel.base import CostModel, check_job
from muxserve.costmodel.profile_table import ProfileTable, load_profile
from muxserve.costmodel.roofline import RooflineCostModel

A100_PROFILE = Path("shared") / "data" / "profiles" / "muxserve_a100_llama.json"


def default_profile_path() -> Path:
    """The A100 profile: ``../shared/data/...`` from the working directory (the repo root), else
    relative to the source checkout this package is installed from."""
    here = Path("..") / A100_PROFILE
    if here.exists():
        return here
    return Path(__file__).resolve().parents[3] / ".." / A100_PROFILE


@dataclass(frozen=True)
class ProfileRef:
    """Which profiled (model, num_gpus) prices a query for another (model, tp)."""

    model: str
    num_gpus: int
    exact: bool  # the query's own model and TP degree: no transfer


class ProfileCostModel(CostModel):
    """Cost model backed by a profile table (see :mod:`muxserve.costmodel.profile_table`).

    Model mapping: a query for (arch, tp) uses the table's own (arch.name, tp) when profiled
    (``aliases`` may rename, e.g. {"my-llama": "llama-7b"}). Otherwise it uses, among profiled
    entries with the same TP degree if there are any (their communication and overheads are in
    the numbers), the (model, num_gpus) whose parameters per device are nearest to arch's (in
    log ratio; the same model name wins ties), and transfers its latency with the roofline
    model: t = t_profile(ref) x roofline(arch, tp) / roofline(ref, ref_tp), both at the query's
    batch, tokens and share. The ratio carries the shape difference (compute, weights, KV,
    all-reduce) while the measured numbers keep what the roofline misses; on the A100 file this
    predicts llama-13b/65b from llama-7b/30b better than the roofline alone (see
    benchmarks/results/costmodel.md). Only profiled models whose architecture is known (a
    preset or ``archs``) can stand in for others.

    drop_outliers (when loading from a path): the few measurement glitches of the file (a value
    1.5x above both share neighbours) are replaced by their neighbours' interpolation, so one bad
    run does not steer the planner; every other measured point is still reproduced exactly.
    """

    def __init__(self, table: ProfileTable | str | Path | None = None,
                 device: DeviceSpec | str = "a100-80g", aliases: dict[str, str] | None = None,
                 archs: dict[str, ModelArch] | None = None, dtype_bytes: int = 2,
                 drop_outliers: bool = True, transfer: RooflineCostModel | None = None):
        if table is None:
            table = default_profile_path()
        self.table = (table if isinstance(table, ProfileTable)
                      else load_profile(table, drop_outliers=drop_outliers))
        self.device = get_device(device) if isinstance(device, str) else device
        self.dtype_bytes = dtype_bytes
        self.aliases = dict(aliases or {})
        known = {**MODEL_PRESETS, **(archs or {})}
        self._ref_archs = {m: known[m] for m in self.table.models() if m in known}
        self.transfer = transfer or RooflineCostModel(self.device, dtype_bytes=dtype_bytes)
        self._refs: dict[tuple[str, int, int, str], ProfileRef] = {}
        # per (arch object, tp, phase): the ref and its grid's interpolator, so a simulator's
        # hundreds of thousands of calls skip resolve()'s key (num_params is computed) and the
        # table's lookups. The arch is held, so its id() cannot be reused while cached.
        self._fast: dict[tuple[int, int, str], tuple[ModelArch, ProfileRef,
                                                     Callable[[float, float, float], float]]] = {}

    def resolve(self, arch: ModelArch, tp: int, phase: str) -> ProfileRef:
        """The profiled entry that prices ``arch`` at ``tp`` (memoised)."""
        key = (arch.name, arch.num_params, tp, phase)
        ref = self._refs.get(key)
        if ref is None:
            ref = self._resolve(arch, tp, phase)
            self._refs[key] = ref
        return ref

    def _lookup(self, arch: ModelArch, tp: int, phase: str
                ) -> tuple[ProfileRef, Callable[[float, float, float], float]]:
        hit = self._fast.get((id(arch), tp, phase))
        if hit is None or hit[0] is not arch:
            ref = self.resolve(arch, tp, phase)
            if len(self._fast) >= 4096:  # many throwaway arch objects: start over
                self._fast.clear()
            hit = (arch, ref, self.table.interpolator(ref.model, ref.num_gpus, phase))
            self._fast[(id(arch), tp, phase)] = hit
        return hit[1], hit[2]

    def _resolve(self, arch: ModelArch, tp: int, phase: str) -> ProfileRef:
        name = self.aliases.get(arch.name, arch.name)
        if self.table.has(name, tp, phase):
            return ProfileRef(name, tp, True)
        per_dev = arch.num_params / tp
        best: tuple[int, float, int, ProfileRef] | None = None
        for m, ref_arch in self._ref_archs.items():
            for g in self.table.num_gpus_of(m):
                if not self.table.has(m, g, phase):
                    continue
                ratio = per_dev / (ref_arch.num_params / g)
                # same TP degree first: its communication and overheads are in the numbers
                cand = (0 if g == tp else 1, abs(math.log(ratio)), 0 if m == name else 1,
                        ProfileRef(m, g, False))
                if best is None or cand[:3] < best[:3]:
                    best = cand
        if best is None:
            raise ValueError(
                f"model {arch.name!r} (tp={tp}) is not in the profile and no profiled model of "
                f"known size can stand in; profiled: {', '.join(self.table.models())}; pass "
                f"aliases={{...}} or archs={{...}}, or use the roofline cost model")
        return best[3]

    def prefill_ms(self, arch: ModelArch, num_seqs: int, num_tokens: int, share: float,
                   tp: int = 1) -> float:
        check_job(num_seqs, num_tokens, share, tp, what="num_seqs")
        ref, interp = self._lookup(arch, tp, "prefill")
        ms = interp(share * 100.0, num_seqs, num_tokens / num_seqs)
        if ref.exact:
            return ms
        r = self.transfer
        return ms * (r.prefill_ms(arch, num_seqs, num_tokens, share, tp)
                     / r.prefill_ms(self._ref_archs[ref.model], num_seqs, num_tokens, share,
                                    ref.num_gpus))

    def decode_ms(self, arch: ModelArch, batch: int, context_tokens: int, share: float,
                  tp: int = 1) -> float:
        check_job(batch, context_tokens, share, tp)
        ref, interp = self._lookup(arch, tp, "decoding")
        ms = interp(share * 100.0, batch, context_tokens / batch)
        if ref.exact:
            return ms
        r = self.transfer
        return ms * (r.decode_ms(arch, batch, context_tokens, share, tp)
                     / r.decode_ms(self._ref_archs[ref.model], batch, context_tokens, share,
                                   ref.num_gpus))
