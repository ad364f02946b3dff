"""What the planner optimises: estimated throughput of LLMs sharing one mesh.

MuxServe's unit model: model i runs decode steps of batch B_i on its decode share while the
unit's prefills run one at a time, so one "round" of model i takes L_out,i decode steps plus
every colocated model's prefill::

    tpt_i = B_i / (L_out,i x T_dec,i(B_i) + sum_j T_pre,j(B_j))        (spatial-temporal)
    tpt_i = B_i / sum_j (L_out,j x T_dec,j(B_j) + T_pre,j(B_j))        (temporal: one job at a time)

Batches start at what each model needs alone and are raised, one model at a time (the one
furthest below its rate), until every rate is met or KV memory runs out; the best value seen
is kept. The value of a unit is sum_i rate_i x min(tpt_i, rate_i), so the cluster objective
(rate-weighted mean throughput) is the sum of unit values over the total rate. Equal values
(typical at low load, where every placement meets every rate) are told apart by headroom: the
throughput each model would reach with its batch raised to its KV limit, capped at 2x its rate.

Everything is memoised: cost-model calls per (model kind, batch, share, mesh), single-model
candidates per (model, mesh) and unit estimates per (mesh, members), because the search
evaluates the same states many times across groupings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from muxserve.config.devices import DeviceSpec
from muxserve.config.models import ModelArch
from muxserve.costmodel.base import CostModel
from muxserve.placement.workload_spec import ModelDemand

GIB = 1024**3


@dataclass(frozen=True)
class PlannerConfig:
    """Knobs of the planner. Defaults follow the original system on A100-80GB.

    overhead_gib_per_model: per device and colocated model (activations and the two worker
    processes' contexts; the original reserves 6 + 1.6 GB), capped at overhead_max_fraction of
    the device memory for small devices. kv_reserve_seqs: a model goes only where its KV share
    can hold this many average-length sequences (gives the paper's minimum meshes 7B/13B:1,
    30B:2, 65B:4 on A100-80GB). spatial_kv_to_weight: the spatial baseline wants KV room of at
    least this many times the weight bytes (gives the paper's 7B/13B:1, 30B:4, 65B:8).
    """

    mem_utilization: float = 0.95
    overhead_gib_per_model: float = 6.0
    overhead_max_fraction: float = 0.08
    kv_reserve_seqs: int = 32
    decode_shares_pct: tuple[int, ...] = (30, 40, 50, 60, 70, 80, 90)
    prefill_shares_pct: tuple[int, ...] = (30, 40, 50, 60, 70, 80, 90, 100)
    prefill_slack: float = 0.10
    max_decode_share_sum_pct: int = 120
    prefill_chunk_tokens: int = 2048
    max_batch: int = 1024
    batch_growth: float = 0.125
    mesh_sizes: tuple[int, ...] = (1, 2, 4, 8)
    full_enumeration_limit: int = 3000
    spatial_kv_to_weight: float = 1.5

    def __post_init__(self) -> None:
        if not 0 < self.mem_utilization <= 1:
            raise ValueError(f"mem_utilization must be in (0, 1], got {self.mem_utilization}")
        if self.kv_reserve_seqs < 1 or self.max_batch < 1:
            raise ValueError("kv_reserve_seqs and max_batch must be >= 1")
        bad = [s for s in self.decode_shares_pct + self.prefill_shares_pct if not 1 <= s <= 100]
        if bad:
            raise ValueError(f"compute shares must be percentages in [1, 100], got {bad}")


@dataclass(frozen=True)
class Candidate:
    """Model i alone on a mesh of n devices: shares, the batch that meets its rate, throughput."""

    num_gpus: int
    prefill_pct: int
    decode_pct: int
    batch: int
    tpt_rps: float


# (model index, prefill %, decode %, batch cap)
Member = tuple[int, int, int, int]


@dataclass(frozen=True)
class UnitEstimate:
    batches: tuple[int, ...]
    tpts_rps: tuple[float, ...]  # uncapped throughput at those batches
    kv_fractions: tuple[float, ...]
    kv_free_bytes: int  # per device, after weights and overheads
    value: float  # sum rate x min(tpt, rate)
    # sum rate x min(capacity, 2 x rate), capacity = throughput with the batch raised to the KV
    # limit: how much burst the unit can absorb; breaks ties between equal values
    headroom: float = 0.0


class Estimator:
    """Memoised throughput and memory estimates for one workload on one device preset."""

    def __init__(self, models: Sequence[ModelDemand], cost_model: CostModel,
                 device: DeviceSpec | None = None, config: PlannerConfig | None = None) -> None:
        self.models = tuple(models)
        self.cost = cost_model
        self.device = device or cost_model.device
        self.cfg = config or PlannerConfig()
        kinds: dict[tuple[ModelArch, float, float], int] = {}
        self.kind_of: list[int] = []
        for m in self.models:
            key = (m.arch, m.avg_prompt_tokens, m.avg_output_tokens)
            self.kind_of.append(kinds.setdefault(key, len(kinds)))
        self.kinds = list(kinds)
        self.rates = [m.rate_rps for m in self.models]
        self.usable_bytes = self.device.memory_bytes * self.cfg.mem_utilization
        self.overhead_bytes = min(self.cfg.overhead_gib_per_model * GIB,
                                  self.cfg.overhead_max_fraction * self.device.memory_bytes)
        self._pre: dict[tuple[int, int, int, int], float] = {}
        self._dec: dict[tuple[int, int, int, int], float] = {}
        self._mem: dict[tuple[int, int], tuple[float, float] | None] = {}
        self._pshare: dict[tuple[int, int], int] = {}
        self._cand: dict[tuple[int, int], Candidate | None] = {}
        self._unit: dict[tuple[int, tuple[Member, ...], bool], UnitEstimate] = {}
        self._alone: dict[tuple[int, int, int, int, int], tuple[int, float]] = {}
        self._fits: dict[tuple[int, tuple[int, ...]], bool] = {}

    # ---- cost-model calls ---------------------------------------------------------------------
    def t_pre_ms(self, kind: int, batch: int, pct: int, n: int) -> float:
        """Prefill of ``batch`` prompts, split like ADBS into batches of <= chunk tokens."""
        key = (kind, batch, pct, n)
        v = self._pre.get(key)
        if v is None:
            arch, lin, _ = self.kinds[kind]
            tokens = batch * lin
            chunks = max(1, math.ceil(tokens / self.cfg.prefill_chunk_tokens))
            chunks = min(chunks, batch)
            seqs = math.ceil(batch / chunks)
            v = chunks * self.cost.prefill_ms(arch, seqs, max(1, round(tokens / chunks)),
                                              pct / 100, n)
            self._pre[key] = v
        return v

    def t_dec_ms(self, kind: int, batch: int, pct: int, n: int) -> float:
        """One decode step; each sequence holds its prompt and, on average, half its output."""
        key = (kind, batch, pct, n)
        v = self._dec.get(key)
        if v is None:
            arch, lin, lout = self.kinds[kind]
            ctx = max(1, round(batch * (lin + lout / 2)))
            v = self.cost.decode_ms(arch, batch, ctx, pct / 100, n)
            self._dec[key] = v
        return v

    def mem(self, kind: int, n: int) -> tuple[float, float] | None:
        """(weight bytes, KV bytes of one average sequence) per device, or None when the cost
        model cannot run this model at tensor parallelism n."""
        key = (kind, n)
        if key not in self._mem:
            arch, lin, lout = self.kinds[kind]
            try:
                self.t_dec_ms(kind, 1, 100, n)
                self.t_pre_ms(kind, 1, 100, n)
                self._mem[key] = (float(self.cost.weight_bytes(arch, n)),
                                  float(self.cost.kv_bytes_per_token(arch, n)) * (lin + lout))
            except (ValueError, KeyError):
                self._mem[key] = None
        return self._mem[key]

    def weight_dev(self, kind: int, n: int) -> float:
        """Weight bytes per device; only for (kind, n) the cost model supports."""
        m = self.mem(kind, n)
        assert m is not None, f"{self.kinds[kind][0].name} at TP {n} is not supported"
        return m[0]

    def seq_kv(self, kind: int, n: int) -> float:
        """KV bytes per device of one average sequence; only for supported (kind, n)."""
        m = self.mem(kind, n)
        assert m is not None, f"{self.kinds[kind][0].name} at TP {n} is not supported"
        return m[1]

    # ---- memory -------------------------------------------------------------------------------
    def kv_free_bytes(self, n: int, model_ids: Sequence[int]) -> float:
        """Per-device bytes left for KV after weights and per-model overheads (may be < 0)."""
        used = 0.0
        for i in model_ids:
            m = self.mem(self.kind_of[i], n)
            if m is None:
                return -math.inf
            used += m[0] + self.overhead_bytes
        return self.usable_bytes - used

    def fits(self, n: int, model_ids: Sequence[int]) -> bool:
        """Weights + overheads + a KV reserve of kv_reserve_seqs sequences per model."""
        key = (n, tuple(model_ids))
        ok = self._fits.get(key)
        if ok is None:
            ok = self._fits[key] = self._fits_uncached(n, model_ids)
        return ok

    def _fits_uncached(self, n: int, model_ids: Sequence[int]) -> bool:
        free = self.kv_free_bytes(n, model_ids)
        if free == -math.inf:
            return False
        reserve = sum(self.cfg.kv_reserve_seqs * self.seq_kv(self.kind_of[i], n)
                      for i in model_ids)
        return free >= reserve

    def kv_split(self, n: int, model_ids: Sequence[int]) -> tuple[float, list[float]]:
        """ADBS's initial quotas: each model's reserve, then the rest in proportion to
        rate x KV bytes per token. Returns (free bytes per device, per-model fractions)."""
        free = max(0.0, self.kv_free_bytes(n, model_ids))
        seq = [self.seq_kv(self.kind_of[i], n) for i in model_ids]
        reserve = [min(self.cfg.kv_reserve_seqs * s, free / len(seq)) for s in seq]
        rest = max(0.0, free - sum(reserve))
        w = [self.rates[i] * s + 1e-12 * s for i, s in zip(model_ids, seq, strict=True)]
        tot = sum(w)
        kv = [r + rest * x / tot for r, x in zip(reserve, w, strict=True)]
        return free, [k / free if free > 0 else 0.0 for k in kv]

    # ---- single model -------------------------------------------------------------------------
    def tpt_alone(self, i: int, n: int, p: int, d: int, batch: int) -> float:
        if batch < 1:
            return 0.0
        k = self.kind_of[i]
        lout = self.kinds[k][2]
        return 1000.0 * batch / (lout * self.t_dec_ms(k, batch, d, n)
                                 + self.t_pre_ms(k, batch, p, n))

    def alone_batch(self, i: int, n: int, p: int, d: int, bmax: int) -> tuple[int, float]:
        """Smallest batch <= bmax whose throughput alone meets the rate (else bmax)."""
        key = (i, n, p, d, bmax)
        r = self._alone.get(key)
        if r is None:
            r = self._alone[key] = self._alone_batch(i, n, p, d, bmax)
        return r

    def _alone_batch(self, i: int, n: int, p: int, d: int, bmax: int) -> tuple[int, float]:
        if bmax < 1:
            return 0, 0.0
        rate = self.rates[i]
        lo, hi = 1, bmax
        if self.tpt_alone(i, n, p, d, hi) < rate:
            return hi, self.tpt_alone(i, n, p, d, hi)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.tpt_alone(i, n, p, d, mid) >= rate:
                hi = mid
            else:
                lo = mid + 1
        return lo, self.tpt_alone(i, n, p, d, lo)

    def prefill_share(self, kind: int, n: int) -> int:
        """Smallest prefill share whose latency is within prefill_slack of a full device's
        (prefill is compute-bound, but small models stop speeding up before 100%)."""
        key = (kind, n)
        if key not in self._pshare:
            seqs = max(1, int(self.cfg.prefill_chunk_tokens // max(1.0, self.kinds[kind][1])))
            full = self.t_pre_ms(kind, seqs, 100, n)
            self._pshare[key] = next(
                (p for p in sorted(self.cfg.prefill_shares_pct)
                 if self.t_pre_ms(kind, seqs, p, n) <= (1 + self.cfg.prefill_slack) * full), 100)
        return self._pshare[key]

    def candidate(self, i: int, n: int) -> Candidate | None:
        """Model i alone on n devices: the smallest decode share that meets its rate (or the
        share with the best throughput); None if it does not fit or the cost model lacks it."""
        key = (i, n)
        if key not in self._cand:
            self._cand[key] = self._make_candidate(i, n)
        return self._cand[key]

    def _make_candidate(self, i: int, n: int) -> Candidate | None:
        kind = self.kind_of[i]
        if self.mem(kind, n) is None or not self.fits(n, [i]):
            return None
        free = self.kv_free_bytes(n, [i])
        bmax = min(self.cfg.max_batch, int(free // self.seq_kv(kind, n)))
        p = self.prefill_share(kind, n)
        best: Candidate | None = None
        for d in sorted(self.cfg.decode_shares_pct):
            b, tpt = self.alone_batch(i, n, p, d, bmax)
            c = Candidate(n, p, d, b, tpt)
            if tpt >= self.rates[i]:
                return c
            if best is None or tpt > best.tpt_rps * (1 + 1e-9):
                best = c
        return best

    def min_mesh(self, i: int) -> int | None:
        return next((n for n in sorted(self.cfg.mesh_sizes) if self.candidate(i, n)), None)

    # ---- units --------------------------------------------------------------------------------
    def unit(self, n: int, members: tuple[Member, ...], overlap: bool = True) -> UnitEstimate:
        """Estimate a unit; ``members`` sorted by model index (the memo key)."""
        key = (n, members, overlap)
        est = self._unit.get(key)
        if est is None:
            est = self._estimate_unit(n, members, overlap)
            self._unit[key] = est
        return est

    def _tpts(self, n: int, members: Sequence[Member], batches: Sequence[int],
              overlap: bool) -> list[float]:
        kinds = [self.kind_of[m[0]] for m in members]
        pre = [self.t_pre_ms(k, b, m[1], n) if b else 0.0
               for k, b, m in zip(kinds, batches, members, strict=True)]
        dec = [self.kinds[k][2] * self.t_dec_ms(k, b, m[2], n) if b else 0.0
               for k, b, m in zip(kinds, batches, members, strict=True)]
        if overlap:
            s = sum(pre)
            return [1000.0 * b / (x + s) if b else 0.0 for b, x in zip(batches, dec, strict=True)]
        round_ms = sum(pre) + sum(dec)
        return [1000.0 * b / round_ms if b else 0.0 for b in batches]

    def _estimate_unit(self, n: int, members: tuple[Member, ...], overlap: bool) -> UnitEstimate:
        ids = [m[0] for m in members]
        free, fracs = self.kv_split(n, ids)
        rates = [self.rates[i] for i in ids]
        bmax = [min(m[3], int(free * f // self.seq_kv(self.kind_of[m[0]], n)))
                for m, f in zip(members, fracs, strict=True)]
        batches = [self.alone_batch(m[0], n, m[1], m[2], b)[0]
                   for m, b in zip(members, bmax, strict=True)]
        best_val, best_b, best_t = -1.0, list(batches), [0.0] * len(members)
        while True:
            tpts = self._tpts(n, members, batches, overlap)
            val = sum(r * min(t, r) for r, t in zip(rates, tpts, strict=True))
            if val > best_val * (1 + 1e-12):
                best_val, best_b, best_t = val, list(batches), tpts
            # raise the batch of the model furthest below its rate that still has KV room
            lag = [(t / r, j) for j, (t, r) in enumerate(zip(tpts, rates, strict=True))
                   if t < r and batches[j] < bmax[j]]
            if not lag:
                break
            _, j = min(lag)
            batches[j] = min(bmax[j], batches[j] + max(1, int(batches[j] * self.cfg.batch_growth)))
        headroom = 0.0
        for j, r in enumerate(rates):
            raised = best_b[:j] + [bmax[j]] + best_b[j + 1:]
            cap_j = self._tpts(n, members, raised, overlap)[j] if bmax[j] > 0 else 0.0
            headroom += r * min(cap_j, 2 * r)
        return UnitEstimate(tuple(best_b), tuple(best_t), tuple(fracs), int(free), best_val,
                            headroom)
