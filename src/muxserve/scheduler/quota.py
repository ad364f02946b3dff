"""KV quotas per model: MuxServe's unified-resource-manager policy.

A quota is a number of KV blocks. It starts proportional to rate x g (g = blocks per token
block, so a deep/wide model gets more blocks for the same rate) and is turned into a cap on the
model's concurrent sequences with an average sequence length, as MuxServe does. Quotas bound
ADMISSION only: a running sequence keeps growing until the pool itself runs out (then the
scheduler preempts), so shrinking a quota never evicts anything.

Adaptive mode (ADBS) moves blocks every ``quota_adapt_interval_s``:
utilisation = mean decode batch since the last adaptation / sequence cap. A model under
``adapt_util_threshold`` (0.9) donates (0.95 - utilisation) x quota, but never below the
blocks it holds now; a model at or above it whose waiting queue is long (>= 1.1 x its mean batch)
receives donated blocks in proportion to its queue's block demand; what is left (no receiver,
rounding) goes to the model with the longest queue. The total is conserved exactly.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from muxserve.kvcache.block_manager import BlockManager
from muxserve.scheduler.api import SchedulerConfig, UnitModel

QUOTA_MODES = ("adaptive", "fixed", "none")


def proportional_split(total: int, weights: Mapping[int, float]) -> dict[int, int]:
    """Integer split of ``total`` proportional to ``weights`` (all equal if they sum to 0);
    the rounding remainder goes to the largest weights first (ties: lower id)."""
    wsum = sum(weights.values())
    if wsum <= 0:
        weights = dict.fromkeys(weights, 1.0)
        wsum = float(len(weights))
    out = {m: int(total * w / wsum) for m, w in weights.items()}
    rest = total - sum(out.values())
    for m in sorted(weights, key=lambda m: (-weights[m], m))[:rest]:
        out[m] += 1
    return out


class QuotaManager:
    """Per-model KV block quotas and the sequence caps derived from them."""

    def __init__(self, models: Sequence[UnitModel], bm: BlockManager, config: SchedulerConfig,
                 mode: str) -> None:
        if mode not in QUOTA_MODES:
            raise ValueError(f"unknown quota mode {mode!r}; valid: {', '.join(QUOTA_MODES)}")
        self.mode = mode
        self._cfg = config
        self._bm = bm
        self._max_seqs = {m.model_id: m.max_num_seqs for m in models}
        # blocks one average sequence holds: the unit that converts blocks into a sequence cap
        self._blocks_per_seq = {m.model_id: max(1, bm.blocks_needed(m.model_id,
                                                                    config.avg_seq_tokens))
                                for m in models}
        weights = {m.model_id: m.rate_rps * bm.layout(m.model_id).blocks_per_token_block
                   for m in models}
        self.quotas: dict[int, int] = proportional_split(bm.num_blocks, weights)
        self._batch_sum = dict.fromkeys(self._max_seqs, 0)
        self._steps = dict.fromkeys(self._max_seqs, 0)
        self._last_adapt_s: float | None = None
        self.num_adaptations = 0

    def seq_cap(self, model_id: int) -> int:
        """Most sequences the model may hold at once (>= 1, so a lone request always runs)."""
        if self.mode == "none":
            return self._max_seqs[model_id]
        cap = self.quotas[model_id] // self._blocks_per_seq[model_id]
        return max(1, min(self._max_seqs[model_id], cap))

    def record_decode(self, model_id: int, batch: int) -> None:
        self._batch_sum[model_id] += batch
        self._steps[model_id] += 1

    def mean_batch(self, model_id: int) -> float:
        steps = self._steps[model_id]
        return self._batch_sum[model_id] / steps if steps else 0.0

    def utilisation(self, model_id: int) -> float:
        return self.mean_batch(model_id) / self.seq_cap(model_id)

    def maybe_adapt(self, now_s: float, queue_lens: Mapping[int, int]) -> bool:
        """Adapt when an interval has passed since the last adaptation (or the first call)."""
        if self.mode != "adaptive":
            return False
        if self._last_adapt_s is None:
            self._last_adapt_s = now_s
            return False
        if now_s - self._last_adapt_s < self._cfg.quota_adapt_interval_s:
            return False
        self._last_adapt_s = now_s
        self.adapt(queue_lens)
        return True

    def adapt(self, queue_lens: Mapping[int, int]) -> None:
        """One ADBS adaptation step from the decode batches measured since the last one.

        Nothing moves when no model has a waiting queue: no one needs the blocks.
        """
        cfg = self._cfg
        util = {m: self.utilisation(m) for m in self.quotas}
        queue = {m: queue_lens.get(m, 0) for m in self.quotas}
        if any(queue.values()):
            pool = 0
            for m, u in util.items():
                if u < cfg.adapt_util_threshold:
                    give = int((cfg.adapt_donate_target - u) * self.quotas[m])
                    give = max(0, min(give, self.quotas[m] - self._bm.used_blocks(m)))
                    self.quotas[m] -= give
                    pool += give
            demand = {m: queue[m] * self._blocks_per_seq[m] for m, u in util.items()
                      if u >= cfg.adapt_util_threshold and queue[m] > 0
                      and queue[m] >= cfg.adapt_queue_factor * self.mean_batch(m)}
            total_demand = sum(demand.values())
            given = 0
            for m, d in demand.items():
                self.quotas[m] += pool * d // total_demand
                given += pool * d // total_demand
            longest = max(self.quotas, key=lambda m: (queue[m], -m))
            self.quotas[longest] += pool - given
        self._batch_sum = dict.fromkeys(self.quotas, 0)
        self._steps = dict.fromkeys(self.quotas, 0)
        self.num_adaptations += 1

    def check_integrity(self) -> None:
        assert sum(self.quotas.values()) == self._bm.num_blocks, (
            f"quotas {self.quotas} do not add up to the pool's {self._bm.num_blocks} blocks")
        assert all(q >= 0 for q in self.quotas.values()), f"negative quota in {self.quotas}"
