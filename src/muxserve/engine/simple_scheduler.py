"""The offline engine's batching policy: prefill first, round-robin across models, FCFS.

Kept in one small module so that the ADBS scheduler package can replace it. Each call to
``schedule`` returns ONE model's batch: new prefills (admitted first-come-first-served while
KV blocks, the prefill token cap and the batch cap allow) or, when no model can admit a
prefill, all running sequences of the next model in round-robin order, for one decode step.
It allocates the KV blocks the batch needs before returning, so the runner can write them.

When a decode cannot get a block, the newest running sequence (of any model, or of the same
model when a quota is what is short) is preempted: its blocks are freed and it waits to be
recomputed by a later prefill. Oldest-first service means the oldest request always progresses.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass

from muxserve.engine.request import SeqStatus, Sequence
from muxserve.kvcache.block_manager import BlockManager
from muxserve.types import Phase


@dataclass(frozen=True)
class Batch:
    """One model's work for one step. Prefill: feed all of each sequence's tokens from position
    0. Decode: feed each sequence's last sampled token."""

    model_id: int
    phase: Phase
    seqs: tuple[Sequence, ...]


class SimpleScheduler:
    """Owns the waiting/running queues of every model; changes the block manager's allocations."""

    def __init__(self, blocks: BlockManager, model_ids: list[int],
                 max_prefill_tokens: int = 2048, max_num_seqs: int = 256) -> None:
        self.blocks = blocks
        self.model_ids = list(model_ids)
        self.max_prefill_tokens = max_prefill_tokens
        self.max_num_seqs = max_num_seqs
        # Both queues are kept sorted by seq_id (= arrival order).
        self.waiting: dict[int, list[Sequence]] = {m: [] for m in self.model_ids}
        self.running: dict[int, list[Sequence]] = {m: [] for m in self.model_ids}
        self._next_prefill = 0  # round-robin cursors into model_ids
        self._next_decode = 0

    def add(self, seq: Sequence) -> None:
        assert seq.status is SeqStatus.WAITING
        bisect.insort(self.waiting[seq.model_id], seq, key=lambda s: s.seq_id)

    def has_unfinished(self) -> bool:
        return any(self.waiting[m] or self.running[m] for m in self.model_ids)

    def finish(self, seq: Sequence) -> None:
        """Drop a finished (or aborted) sequence, waiting or running, and free its blocks."""
        if seq.status is SeqStatus.RUNNING:
            self.running[seq.model_id].remove(seq)
            self.blocks.free(seq.seq_id)
        elif seq.status is SeqStatus.WAITING:
            self.waiting[seq.model_id].remove(seq)
        seq.status = SeqStatus.FINISHED

    def running_seq_ids(self) -> set[int]:
        return {s.seq_id for seqs in self.running.values() for s in seqs}

    def schedule(self) -> Batch | None:
        """The next batch (its blocks allocated), or None when nothing is left to do."""
        for model_id in _rotate(self.model_ids, self._next_prefill):
            seqs = self._admit_prefills(model_id)
            if seqs:
                self._next_prefill = self.model_ids.index(model_id) + 1
                return Batch(model_id, Phase.PREFILL, tuple(seqs))
        for model_id in _rotate(self.model_ids, self._next_decode):
            seqs = self._reserve_decodes(model_id)
            if seqs:
                self._next_decode = self.model_ids.index(model_id) + 1
                return Batch(model_id, Phase.DECODE, tuple(seqs))
        assert not self.has_unfinished(), "requests wait but none can be scheduled"
        return None

    def _admit_prefills(self, model_id: int) -> list[Sequence]:
        waiting, running = self.waiting[model_id], self.running[model_id]
        batch: list[Sequence] = []
        num_tokens = 0
        while waiting and len(running) < self.max_num_seqs:
            seq = waiting[0]
            # A prompt over the cap still runs, alone, so that it cannot wait forever.
            over_cap = batch and num_tokens + seq.num_tokens > self.max_prefill_tokens
            if over_cap or not self.blocks.can_allocate(model_id, seq.num_tokens):
                break
            self.blocks.allocate(seq.seq_id, model_id, seq.num_tokens)
            waiting.pop(0)
            seq.status = SeqStatus.RUNNING
            running.append(seq)  # its id is newer than every running one only if never preempted
            running.sort(key=lambda s: s.seq_id)
            batch.append(seq)
            num_tokens += seq.num_tokens
        return batch

    def _reserve_decodes(self, model_id: int) -> list[Sequence]:
        batch: list[Sequence] = []
        for seq in list(self.running[model_id]):  # oldest first
            if seq.status is not SeqStatus.RUNNING:
                continue  # preempted below for an older sequence of this batch
            while not self.blocks.can_append(seq.seq_id, 1):
                victim = self._newest_running(None if self._quota_allows(model_id) else model_id)
                self._preempt(victim)
                if victim is seq:
                    break
            else:
                self.blocks.append(seq.seq_id, 1)
                batch.append(seq)
        return batch

    def _quota_allows(self, model_id: int) -> bool:
        """True unless the model's quota (not the free pool) is what blocks its next append."""
        quota = self.blocks.quota(model_id)
        g = self.blocks.layout(model_id).blocks_per_token_block
        return quota is None or self.blocks.used_blocks(model_id) + g <= quota

    def _newest_running(self, model_id: int | None) -> Sequence:
        models = self.model_ids if model_id is None else [model_id]
        return max((s for m in models for s in self.running[m]), key=lambda s: s.seq_id)

    def _preempt(self, seq: Sequence) -> None:
        self.running[seq.model_id].remove(seq)
        self.blocks.free(seq.seq_id)
        seq.status = SeqStatus.WAITING
        seq.num_preemptions += 1
        bisect.insort(self.waiting[seq.model_id], seq, key=lambda s: s.seq_id)


def _rotate(items: list[int], start: int) -> list[int]:
    start %= max(len(items), 1)
    return items[start:] + items[:start]
