"""KV quotas per model: MuxServe's unified-resource-manager policy.

A quota is a number of KV blocks. It starts proportional to rate x g (g = blocks per token
block, so a deep/wide model gets more blocks for the same rate) and is turned into a cap on the
model's concurrent sequences with an average sequence length, as MuxServe does. Quotas bound
ADMISSION only: a running sequence keeps growing until the pool itself runs out (then the
scheduler preempts), so shrinking a quota never evicts anything.

Adaptive mode (ADBS, as the original's scheduler does it) moves blocks every
``quota_adapt_interval_s``. utilisation = mean decode batch since the last adaptation / sequence
cap. A model under ``adapt_util_threshold`` (0.9) offers max(1, (0.95 - util) x cap) sequences'
worth of blocks (never blocks it holds now). Each model at or above it whose demand (waiting +
running requests) is >= 1.1 x its mean batch, busiest first, grows by min(max(1, 10% of its mean
batch), demand - mean batch) sequences, taken from the offers in proportion to their size; donors
lose only what is taken. Finally the blocks that form no whole sequence in any model's quota
("fragments") are pooled and given, a sequence at a time, to the models with the longest waiting
queues. The total is conserved exactly.
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
        """Most sequences the model may hold at once (>= 1, so a lone request always runs).

        adaptive: quota // blocks per average sequence (like the original ADBS, this replaces
        the placement's max_num_seqs); fixed: also at most max_num_seqs; none: max_num_seqs.
        """
        if self.mode == "none":
            return self._max_seqs[model_id]
        cap = self.quotas[model_id] // self._blocks_per_seq[model_id]
        if self.mode == "fixed":
            cap = min(self._max_seqs[model_id], cap)
        return max(1, cap)

    def record_decode(self, model_id: int, batch: int) -> None:
        self._batch_sum[model_id] += batch
        self._steps[model_id] += 1

    def mean_batch(self, model_id: int) -> float:
        steps = self._steps[model_id]
        return self._batch_sum[model_id] / steps if steps else 0.0

    def utilisation(self, model_id: int) -> float:
        return self.mean_batch(model_id) / self.seq_cap(model_id)

    def due(self, now_s: float) -> bool:
        """True when an adaptation is due (adaptive mode, an interval after the last one; the
        first call only starts the clock)."""
        if self.mode != "adaptive":
            return False
        if self._last_adapt_s is None:
            self._last_adapt_s = now_s
            return False
        if now_s - self._last_adapt_s < self._cfg.quota_adapt_interval_s:
            return False
        self._last_adapt_s = now_s
        return True

    def adapt(self, waiting: Mapping[int, int], running: Mapping[int, int]) -> None:
        """One ADBS adaptation from the decode batches measured since the last one.
        ``waiting`` / ``running``: requests per model waiting for a prefill / holding blocks."""
        cfg, bps = self._cfg, self._blocks_per_seq
        util = {m: self.utilisation(m) for m in self.quotas}
        offer: dict[int, int] = {}
        for m, u in util.items():
            if u < cfg.adapt_util_threshold:
                seqs = max(1, int((cfg.adapt_donate_target - u) * self.seq_cap(m)))
                offer[m] = max(0, min(seqs * bps[m], self.quotas[m] - self._bm.used_blocks(m)))
        total_offer = sum(offer.values())
        taken = dict.fromkeys(offer, 0)
        busiest = sorted((m for m, u in util.items() if u >= cfg.adapt_util_threshold),
                         key=lambda m: (-util[m], m))
        for m in busiest:
            mean, demand = self.mean_batch(m), waiting.get(m, 0) + running.get(m, 0)
            if not total_offer or demand < cfg.adapt_queue_factor * mean:
                continue
            want = min(max(1, int(0.1 * mean)), int(demand - mean)) * bps[m]
            for d in offer:
                got = min(want * offer[d] // total_offer, offer[d] - taken[d])
                taken[d] += got
                self.quotas[d] -= got
                self.quotas[m] += got
        self._give_fragments(waiting)
        self._batch_sum = dict.fromkeys(self.quotas, 0)
        self._steps = dict.fromkeys(self.quotas, 0)
        self.num_adaptations += 1

    def _give_fragments(self, waiting: Mapping[int, int]) -> None:
        """Pool the blocks that make no whole sequence of any model's quota and hand them out, a
        sequence at a time, to the models with the longest waiting queues."""
        pool = 0
        for m, q in self.quotas.items():
            frag = min(q % self._blocks_per_seq[m], q - self._bm.used_blocks(m))
            if frag > 0:
                self.quotas[m] -= frag
                pool += frag
        longest = sorted(self.quotas, key=lambda m: (-waiting.get(m, 0), m))
        for m in longest:
            seqs = pool // self._blocks_per_seq[m]
            self.quotas[m] += seqs * self._blocks_per_seq[m]
            pool -= seqs * self._blocks_per_seq[m]
        self.quotas[longest[0]] += pool  # less than one sequence of anyone: keep the sum exact

    def check_integrity(self) -> None:
        assert sum(self.quotas.values()) == self._bm.num_blocks, (
            f"quotas {self.quotas} do not add up to the pool's {self._bm.num_blocks} blocks")
        assert all(q >= 0 for q in self.quotas.values()), f"negative quota in {self.quotas}"
