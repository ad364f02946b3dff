"""ProfileCostModel: latencies looked up (and interpolated) in a measured profile table."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

from muxserve.config.devices import DeviceSpec, get_device
from muxserve.config.models import MODEL_PRESETS, ModelArch
from muxserve.costmodel.base import CostModel, check_job
from muxserve.costmodel.profile_table import ProfileTable, load_profile

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
    """Which profiled (model, num_gpus) prices a query, and the factor its latencies get."""

    model: str
    num_gpus: int
    scale: float  # 1.0 for an exact match


class ProfileCostModel(CostModel):
    """Cost model backed by a profile table (see :mod:`muxserve.costmodel.profile_table`).

    Model mapping: a query for (arch, tp) uses the table's own (arch.name, tp) when profiled
    (``aliases`` may rename, e.g. {"my-llama": "llama-7b"}). Otherwise it uses, among profiled
    entries with the same TP degree if there are any (their communication and overheads are in
    the numbers), the (model, num_gpus) whose parameters per device are nearest to arch's (in
    log ratio; the same model name wins ties), and scales its latencies by the ratio of
    parameters per device: to first order both compute and weight traffic scale with it. Only
    profiled models whose architecture is known (a preset or ``archs``) can stand in for others.

    drop_outliers (when loading from a path): the few measurement glitches of the file (a value
    1.5x above both share neighbours) are replaced by their neighbours' interpolation, so one bad
    run does not steer the planner; every other measured point is still reproduced exactly.
    """

    def __init__(self, table: ProfileTable | str | Path | None = None,
                 device: DeviceSpec | str = "a100-80g", aliases: dict[str, str] | None = None,
                 archs: dict[str, ModelArch] | None = None, dtype_bytes: int = 2,
                 drop_outliers: bool = True):
        if table is None:
            table = default_profile_path()
        self.table = (table if isinstance(table, ProfileTable)
                      else load_profile(table, drop_outliers=drop_outliers))
        self.device = get_device(device) if isinstance(device, str) else device
        self.dtype_bytes = dtype_bytes
        self.aliases = dict(aliases or {})
        known = {**MODEL_PRESETS, **(archs or {})}
        self._ref_params = {m: known[m].num_params for m in self.table.models() if m in known}
        self._refs: dict[tuple[str, int, int, str], ProfileRef] = {}

    def resolve(self, arch: ModelArch, tp: int, phase: str) -> ProfileRef:
        """The profiled entry that prices ``arch`` at ``tp`` (memoised)."""
        key = (arch.name, arch.num_params, tp, phase)
        ref = self._refs.get(key)
        if ref is None:
            ref = self._resolve(arch, tp, phase)
            self._refs[key] = ref
        return ref

    def _resolve(self, arch: ModelArch, tp: int, phase: str) -> ProfileRef:
        name = self.aliases.get(arch.name, arch.name)
        if self.table.has(name, tp, phase):
            return ProfileRef(name, tp, 1.0)
        per_dev = arch.num_params / tp
        best: tuple[int, float, int, ProfileRef] | None = None
        for m, p in self._ref_params.items():
            for g in self.table.num_gpus_of(m):
                if not self.table.has(m, g, phase):
                    continue
                ratio = per_dev / (p / g)
                # same TP degree first: its communication and overheads are in the numbers
                cand = (0 if g == tp else 1, abs(math.log(ratio)), 0 if m == name else 1,
                        ProfileRef(m, g, ratio))
                if best is None or cand[:3] < best[:3]:
                    best = cand
        if best is None:
            raise ValueError(
                f"model {arch.name!r} (tp={tp}) is not in the profile and no profiled model of "
                f"known size can stand in; profiled: {', '.join(self.table.models())}; pass "
                f"aliases={{...}} or archs={{...}}, or use the roofline cost model")
        return best[3]

    def _lookup(self, arch: ModelArch, tp: int, phase: str, share: float, batch: float,
                seq_len: float) -> float:
        ref = self.resolve(arch, tp, phase)
        ms = self.table.interpolate(ref.model, ref.num_gpus, phase, share * 100.0, batch, seq_len)
        return ms * ref.scale

    def prefill_ms(self, arch: ModelArch, num_seqs: int, num_tokens: int, share: float,
                   tp: int = 1) -> float:
        check_job(num_seqs, num_tokens, share, tp, what="num_seqs")
        return self._lookup(arch, tp, "prefill", share, num_seqs, num_tokens / num_seqs)

    def decode_ms(self, arch: ModelArch, batch: int, context_tokens: int, share: float,
                  tp: int = 1) -> float:
        check_job(batch, context_tokens, share, tp)
        return self._lookup(arch, tp, "decoding", share, batch, context_tokens / batch)
