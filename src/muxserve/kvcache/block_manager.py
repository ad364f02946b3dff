"""Head-wise paged KV block manager: plain Python over integer block ids (no torch, no numpy).

One pool per unit holds ``num_blocks`` equal-sized blocks of ``block_numel`` elements. A block
stores K and V of ``tokens_per_block = block_numel // (2 * head_dim)`` tokens for ONE
(layer, KV head) of ONE model. Because every block has the same byte size, models of different
head_dim, depth and width draw from ONE free list with no padding waste and no fragmentation
between sub-pools (MuxServe's unified head-wise cache). A model with L layers and H KV heads
takes ``g = L * H`` blocks for every ``tokens_per_block`` tokens of a sequence.

Block table of a sequence: ``table[token_block][layer * H + head] -> block id``; token position p
of (layer l, head h) lives in block ``table[p // tpb][l * H + h]`` at offset ``p % tpb``.

Quotas cap the blocks a model may hold (``None`` = only the free pool limits it). The scheduler
moves quotas between models; lowering a quota below current use is allowed (the model then
cannot grow until it shrinks), so quotas are soft caps on growth, never a reason to evict.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_BLOCK_NUMEL = 8192  # 32 tokens x head_dim 128 x (K, V): one MuxServe block


_NO_IDS: list[int] = []  # the (shared, always empty) row of a manager that does not track ids
_UNSEEN = object()  # check_integrity's markers
_FREE = object()


class OutOfBlocksError(RuntimeError):
    """An allocate/append found too few free blocks or would exceed the model's quota."""


@dataclass(frozen=True)
class KVLayout:
    """How one model's KV cache maps onto the shared pool."""

    model_id: int
    num_layers: int
    num_kv_heads: int  # per tensor-parallel rank
    head_dim: int
    tokens_per_block: int

    @property
    def blocks_per_token_block(self) -> int:
        """g = L * H: blocks a sequence takes for every ``tokens_per_block`` tokens."""
        return self.num_layers * self.num_kv_heads

    def token_blocks(self, num_tokens: int) -> int:
        """Token blocks (rows of the block table) that hold ``num_tokens`` tokens."""
        return -(-num_tokens // self.tokens_per_block)


@dataclass(slots=True)
class _Seq:
    model_id: int
    num_tokens: int
    table: list[list[int]]
    tpb: int  # the model's tokens_per_block and g, copied here for the per-token hot path
    g: int


def _positive_int(name: str, value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


class BlockManager:
    """One unit's pool of KV blocks, shared by all colocated models.

    Every mutating method either succeeds completely or raises without changing anything.
    """

    def __init__(self, num_blocks: int, block_numel: int = DEFAULT_BLOCK_NUMEL,
                 track_block_ids: bool = True) -> None:
        """``track_block_ids=False`` counts blocks without naming them (for the simulator, where
        a 7B model takes 1024 ids per token block): everything works the same except
        block_table(), which raises."""
        if not isinstance(num_blocks, int) or isinstance(num_blocks, bool) or num_blocks < 0:
            raise ValueError(f"num_blocks must be an integer >= 0, got {num_blocks!r}")
        self._num_blocks = num_blocks
        self.block_numel = _positive_int("block_numel", block_numel)
        self.track_block_ids = track_block_ids
        # The free blocks are a LIFO stack, conceptually [n-1, ..., fresh] + returned ids, so the
        # first allocation gets block 0 (readable tests). Only the returned ids are a real list:
        # the never-used ids [fresh, n) are handed out by a high-water mark, so a pool of
        # millions of blocks costs nothing to build (a Python list of 4 M ids took 0.15 s).
        self._free: list[int] = []
        self._fresh = 0 if track_block_ids else num_blocks
        self._num_free = num_blocks
        self._layouts: dict[int, KVLayout] = {}
        self._quotas: dict[int, int | None] = {}
        self._used: dict[int, int] = {}
        # dict order = allocation order, which preemption_victims and seqs_of rely on
        self._seqs: dict[int, _Seq] = {}

    # ---- models ---------------------------------------------------------------------------
    def register_model(self, model_id: int, num_layers: int, num_kv_heads: int, head_dim: int,
                       quota_blocks: int | None = None) -> KVLayout:
        """Add a model to the pool. ``num_kv_heads`` is per tensor-parallel rank."""
        if model_id in self._layouts:
            raise ValueError(f"model_id {model_id} is already registered")
        _positive_int("num_layers", num_layers)
        _positive_int("num_kv_heads", num_kv_heads)
        _positive_int("head_dim", head_dim)
        if self.block_numel % (2 * head_dim):
            raise ValueError(f"head_dim {head_dim}: 2 * head_dim must divide block_numel "
                             f"{self.block_numel}")
        layout = KVLayout(model_id, num_layers, num_kv_heads, head_dim,
                          self.block_numel // (2 * head_dim))
        self._layouts[model_id] = layout
        self._used[model_id] = 0
        self._quotas[model_id] = None
        self.set_quota(model_id, quota_blocks)
        return layout

    def layout(self, model_id: int) -> KVLayout:
        try:
            return self._layouts[model_id]
        except KeyError:
            raise ValueError(f"unknown model_id {model_id!r}; registered: "
                             f"{sorted(self._layouts)}") from None

    def model_ids(self) -> list[int]:
        return list(self._layouts)

    def set_quota(self, model_id: int, quota_blocks: int | None) -> None:
        """Cap the blocks ``model_id`` may hold (None = no cap beyond the pool)."""
        self.layout(model_id)
        if quota_blocks is not None and (not isinstance(quota_blocks, int)
                                         or isinstance(quota_blocks, bool) or quota_blocks < 0):
            raise ValueError(f"quota_blocks must be an integer >= 0 or None, got {quota_blocks!r}")
        self._quotas[model_id] = quota_blocks

    def quota(self, model_id: int) -> int | None:
        self.layout(model_id)
        return self._quotas[model_id]

    # ---- capacity -------------------------------------------------------------------------
    @property
    def num_blocks(self) -> int:
        return self._num_blocks

    @property
    def num_free_blocks(self) -> int:
        return self._num_free

    def used_blocks(self, model_id: int | None = None) -> int:
        """Blocks held by ``model_id`` (all models if None)."""
        if model_id is None:
            return self._num_blocks - self._num_free
        self.layout(model_id)
        return self._used[model_id]

    def blocks_needed(self, model_id: int, num_tokens: int) -> int:
        """Blocks a sequence of ``num_tokens`` tokens holds."""
        if num_tokens < 0:
            raise ValueError(f"num_tokens must be >= 0, got {num_tokens}")
        layout = self.layout(model_id)
        return layout.token_blocks(num_tokens) * layout.blocks_per_token_block

    def _fits(self, model_id: int, extra_blocks: int) -> bool:
        if extra_blocks > self._num_free:
            return False
        quota = self._quotas[model_id]
        return quota is None or extra_blocks == 0 or self._used[model_id] + extra_blocks <= quota

    def _why_not(self, model_id: int, extra_blocks: int) -> str:
        return (f"model {model_id} needs {extra_blocks} more blocks: {self._num_free} free, "
                f"it holds {self._used[model_id]} of quota {self._quotas[model_id]}")

    # ---- sequences ------------------------------------------------------------------------
    def can_allocate(self, model_id: int, num_tokens: int) -> bool:
        """True when a new sequence of ``num_tokens`` fits the free pool AND the model's quota."""
        return self._fits(model_id, self.blocks_needed(model_id, num_tokens))

    def allocate(self, seq_id: int, model_id: int, num_tokens: int) -> None:
        """Give a new sequence blocks for its first ``num_tokens`` tokens (its prompt).

        Raises ValueError for a seq_id already allocated, OutOfBlocksError when it does not fit.
        """
        if seq_id in self._seqs:
            raise ValueError(f"seq_id {seq_id} already holds blocks; free it first")
        need = self.blocks_needed(model_id, num_tokens)
        if not self._fits(model_id, need):
            raise OutOfBlocksError(f"cannot allocate seq {seq_id}: {self._why_not(model_id, need)}")
        layout = self._layouts[model_id]
        g = layout.blocks_per_token_block
        if self.track_block_ids:
            table = [self._take(g) for _ in range(need // g)]
        else:  # _take without ids, all rows at once
            self._num_free -= need
            table = [_NO_IDS] * (need // g)
        self._used[model_id] += need
        self._seqs[seq_id] = _Seq(model_id, num_tokens, table, layout.tokens_per_block, g)

    def _take(self, g: int) -> list[int]:
        # one slice instead of g pops: a 7B model takes 1024 blocks per token block
        self._num_free -= g
        if not self.track_block_ids:
            return _NO_IDS
        free = self._free
        if len(free) >= g:
            row = free[-g:]
            del free[-g:]
            row.reverse()
            return row
        # the stack's top g: all returned ids, then the lowest never-used ones
        row = free[::-1]
        free.clear()
        hi = self._fresh + g - len(row)
        row.extend(range(self._fresh, hi))
        self._fresh = hi
        return row

    def _seq(self, seq_id: int) -> _Seq:
        try:
            return self._seqs[seq_id]
        except KeyError:
            raise ValueError(f"unknown seq_id {seq_id!r}: it holds no blocks") from None

    def _append_need(self, seq: _Seq, num_new_tokens: int) -> int:
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        rows = -(-(seq.num_tokens + num_new_tokens) // seq.tpb) - len(seq.table)
        return rows * seq.g

    def can_append(self, seq_id: int, num_new_tokens: int = 1) -> bool:
        seq = self._seq(seq_id)
        return self._fits(seq.model_id, self._append_need(seq, num_new_tokens))

    def append(self, seq_id: int, num_new_tokens: int = 1) -> None:
        """Grow a sequence by ``num_new_tokens``: g new blocks per token-block boundary crossed."""
        seq = self._seq(seq_id)
        self._grow(seq, seq_id, seq.num_tokens + num_new_tokens, num_new_tokens)

    def grow_to(self, seq_id: int, num_tokens: int) -> None:
        """``append(seq_id, num_tokens - num_tokens(seq_id))`` in one lookup: for a caller that
        tracks the target length itself (the scheduler's decode groups sync lazily)."""
        seq = self._seqs.get(seq_id)
        if seq is None:
            seq = self._seq(seq_id)  # raises the named error
        self._grow(seq, seq_id, num_tokens, num_tokens - seq.num_tokens)

    def _grow(self, seq: _Seq, seq_id: int, new_tokens: int, num_new_tokens: int) -> None:
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        rows = -(-new_tokens // seq.tpb) - len(seq.table)
        if rows:
            need = rows * seq.g
            if not self._fits(seq.model_id, need):
                raise OutOfBlocksError(f"cannot append to seq {seq_id}: "
                                       f"{self._why_not(seq.model_id, need)}")
            if self.track_block_ids:
                for _ in range(rows):
                    seq.table.append(self._take(seq.g))
            else:  # _take without ids, all rows at once
                self._num_free -= need
                seq.table.extend([_NO_IDS] * rows)
            self._used[seq.model_id] += need
        seq.num_tokens = new_tokens

    def append_batch(self, seq_ids: Sequence[int], num_new_tokens: int = 1) -> bool:
        """Grow every sequence of ``seq_ids`` by ``num_new_tokens`` if ALL of them fit the pool
        and their models' quotas; otherwise change nothing and return False.

        The per-step fast path of a decode batch: one call instead of can_append/append per
        sequence (most steps cross no token-block boundary and take no block).
        """
        if num_new_tokens < 0:
            raise ValueError(f"num_new_tokens must be >= 0, got {num_new_tokens}")
        all_seqs = self._seqs
        try:
            seqs = [all_seqs[s] for s in seq_ids]
        except KeyError as e:
            raise ValueError(f"unknown seq_id {e.args[0]!r}: it holds no blocks") from None
        need: dict[int, int] = {}
        growing = []
        for seq in seqs:  # per token of every decode step: keep it lean
            new_tokens = seq.num_tokens + num_new_tokens
            if new_tokens > len(seq.table) * seq.tpb:
                rows = -(-new_tokens // seq.tpb) - len(seq.table)
                need[seq.model_id] = need.get(seq.model_id, 0) + rows * seq.g
                growing.append((seq, rows))
        if need and (sum(need.values()) > self._num_free or not all(
                self._fits(m, n) for m, n in need.items())):
            return False
        for seq, rows in growing:
            for _ in range(rows):
                seq.table.append(self._take(seq.g))
        for m, n in need.items():
            self._used[m] += n
        for seq in seqs:
            seq.num_tokens += num_new_tokens
        return True

    def free(self, seq_id: int) -> None:
        """Return all blocks of a sequence to the pool; the seq_id may be allocated again."""
        seq = self._seq(seq_id)
        del self._seqs[seq_id]
        if self.track_block_ids:
            for row in seq.table:
                self._free.extend(row)  # a plain list extend: a memcpy, even for 1024-block rows
        self._num_free += len(seq.table) * seq.g
        self._used[seq.model_id] -= len(seq.table) * seq.g

    def has_seq(self, seq_id: int) -> bool:
        return seq_id in self._seqs

    def block_table(self, seq_id: int) -> list[list[int]]:
        """A copy of the table: ``[token_block][layer * H + head] -> block id``."""
        seq = self._seq(seq_id)
        if not self.track_block_ids:
            raise ValueError("this BlockManager counts blocks without ids "
                             "(track_block_ids=False): there is no block table")
        return [list(row) for row in seq.table]

    def num_tokens(self, seq_id: int) -> int:
        return self._seq(seq_id).num_tokens

    def model_of(self, seq_id: int) -> int:
        return self._seq(seq_id).model_id

    def blocks_of(self, seq_id: int) -> int:
        """Blocks a sequence holds now."""
        seq = self._seq(seq_id)
        return len(seq.table) * seq.g

    def seqs_of(self, model_id: int) -> list[int]:
        """Sequences of ``model_id`` in allocation order, oldest first."""
        self.layout(model_id)
        return [s for s, seq in self._seqs.items() if seq.model_id == model_id]

    def preemption_victims(self, model_id: int | None, blocks_needed: int) -> list[int]:
        """Newest sequences first (of ``model_id``, or of any model if None) whose freeing frees
        at least ``blocks_needed`` blocks. Changes nothing; the caller frees them.

        If all candidates together free fewer, returns all of them (the caller must check).
        """
        if model_id is not None:
            self.layout(model_id)
        victims: list[int] = []
        freed = 0
        for seq_id in reversed(self._seqs):
            if freed >= blocks_needed:
                break
            seq = self._seqs[seq_id]
            if model_id is None or seq.model_id == model_id:
                victims.append(seq_id)
                freed += len(seq.table) * seq.g
        return victims

    # ---- invariants -----------------------------------------------------------------------
    def check_integrity(self) -> None:
        """Every block is free xor owned by exactly one (seq, token block, slot); counts add up.

        O(num_blocks); meant for tests and for the scheduler when idle. Raises AssertionError.
        Without block ids only the counts are checked.
        """
        used = dict.fromkeys(self._layouts, 0)
        for seq_id, seq in self._seqs.items():
            layout = self._layouts[seq.model_id]
            assert (seq.tpb, seq.g) == (layout.tokens_per_block, layout.blocks_per_token_block), (
                f"seq {seq_id}: stale layout")
            assert len(seq.table) == layout.token_blocks(seq.num_tokens), (
                f"seq {seq_id}: {len(seq.table)} token blocks for {seq.num_tokens} tokens")
            used[seq.model_id] += len(seq.table) * seq.g
        assert used == self._used, f"per-model use {self._used} != recount {used}"
        assert sum(used.values()) + self._num_free == self._num_blocks, "blocks leaked"
        if self.track_block_ids:
            assert len(self._free) + self._num_blocks - self._fresh == self._num_free, (
                "free list and free count disagree")
            self._check_block_ids()
        else:
            assert all(row is _NO_IDS for seq in self._seqs.values() for row in seq.table)

    def _check_block_ids(self) -> None:
        owner: list[object] = [_UNSEEN] * self._fresh + [_FREE] * (self._num_blocks - self._fresh)
        for b in self._free:
            assert 0 <= b < self._num_blocks, f"free list holds out-of-range block {b}"
            assert owner[b] is _UNSEEN, f"block {b} is twice in the free list"
            owner[b] = _FREE
        for seq_id, seq in self._seqs.items():
            for row in seq.table:
                assert len(row) == seq.g, f"seq {seq_id}: row of {len(row)} blocks, not {seq.g}"
                for b in row:
                    assert 0 <= b < self._num_blocks, f"seq {seq_id} holds bad block {b}"
                    assert owner[b] is _UNSEEN, (
                        f"block {b} of seq {seq_id} is also "
                        f"{'free' if owner[b] is _FREE else f'in seq {owner[b]}'}")
                    owner[b] = seq_id
        leaked = [b for b, o in enumerate(owner) if o is _UNSEEN]
        assert not leaked, f"blocks {leaked[:10]} are neither free nor owned (leaked)"
