"""Property tests: random allocate/append/free/preempt/quota sequences over several models with
different head_dim, layers and heads never lose or double-assign a block."""

from __future__ import annotations

from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, consumes, invariant, rule

from muxserve.kvcache import BlockManager, OutOfBlocksError

# (num_layers, num_kv_heads, head_dim): g = 2, 3, 6, 1 and tokens_per_block = 32, 64, 16, 8
MODELS = [(1, 2, 128), (3, 1, 64), (2, 3, 256), (1, 1, 512)]


class BlockManagerMachine(RuleBasedStateMachine):
    seqs = Bundle("seqs")
    track_block_ids = True

    def __init__(self) -> None:
        super().__init__()
        self.bm = BlockManager(num_blocks=60, track_block_ids=self.track_block_ids)
        for mid, (layers, heads, head_dim) in enumerate(MODELS):
            self.bm.register_model(mid, layers, heads, head_dim)
        self.tokens: dict[int, int] = {}  # shadow: seq -> token count
        self.model: dict[int, int] = {}
        self.next_seq = 0

    def _expected_blocks(self, seq: int) -> int:
        return self.bm.blocks_needed(self.model[seq], self.tokens[seq])

    @rule(target=seqs, model=st.integers(0, len(MODELS) - 1), n=st.integers(0, 200))
    def allocate(self, model: int, n: int) -> int:
        seq = self.next_seq
        self.next_seq += 1
        fits = self.bm.can_allocate(model, n)
        free_before = self.bm.num_free_blocks
        try:
            self.bm.allocate(seq, model, n)
        except OutOfBlocksError:
            assert not fits and self.bm.num_free_blocks == free_before
            return -1
        assert fits
        quota = self.bm.quota(model)
        assert quota is None or n == 0 or self.bm.used_blocks(model) <= quota
        self.tokens[seq], self.model[seq] = n, model
        return seq

    @rule(seq=seqs, n=st.integers(0, 70))
    def append(self, seq: int, n: int) -> None:
        if seq not in self.tokens:
            return
        fits = self.bm.can_append(seq, n)
        try:
            self.bm.append(seq, n)
        except OutOfBlocksError:
            assert not fits
            return
        assert fits
        self.tokens[seq] += n

    @rule(picked=st.lists(seqs, max_size=4, unique=True), n=st.integers(0, 40))
    def append_batch(self, picked: list[int], n: int) -> None:
        live = [s for s in picked if s in self.tokens]
        fits = all(self.bm.can_append(s, n) for s in live)
        free_before = self.bm.num_free_blocks
        if self.bm.append_batch(live, n):
            for s in live:
                self.tokens[s] += n
        else:
            assert not fits or len(live) > 1  # one by one may fit, all together may not
            assert self.bm.num_free_blocks == free_before

    @rule(seq=consumes(seqs))
    def free(self, seq: int) -> None:
        if seq not in self.tokens:
            return
        before = self.bm.num_free_blocks
        self.bm.free(seq)
        assert self.bm.num_free_blocks == before + self._expected_blocks(seq)
        del self.tokens[seq], self.model[seq]

    @rule(model=st.one_of(st.none(), st.integers(0, len(MODELS) - 1)), need=st.integers(0, 80))
    def preempt(self, model: int | None, need: int) -> None:
        victims = self.bm.preemption_victims(model, need)
        candidates = [s for s in self.tokens if model is None or self.model[s] == model]
        # newest first: a suffix of the allocation order, reversed
        assert victims == list(reversed(candidates))[: len(victims)]
        freed = sum(self._expected_blocks(s) for s in victims)
        assert freed >= need or victims == list(reversed(candidates))
        if victims:
            assert freed - self._expected_blocks(victims[-1]) < need  # no needless victim
        before = self.bm.num_free_blocks
        for s in victims:
            self.bm.free(s)
            del self.tokens[s], self.model[s]
        assert self.bm.num_free_blocks == before + freed

    @rule(model=st.integers(0, len(MODELS) - 1),
          quota=st.one_of(st.none(), st.integers(0, 60)))
    def set_quota(self, model: int, quota: int | None) -> None:
        self.bm.set_quota(model, quota)
        assert self.bm.quota(model) == quota

    @invariant()
    def blocks_are_conserved(self) -> None:
        self.bm.check_integrity()
        held = sum(self.bm.blocks_of(s) for s in self.tokens)
        assert held + self.bm.num_free_blocks == self.bm.num_blocks, "a block was lost"
        if self.track_block_ids:
            owned = [b for s in self.tokens for row in self.bm.block_table(s) for b in row]
            assert len(owned) == len(set(owned)) == held, "a block is assigned twice"
        for s, n in self.tokens.items():
            assert self.bm.num_tokens(s) == n
            assert self.bm.blocks_of(s) == self._expected_blocks(s)
        for mid in range(len(MODELS)):
            expected = sum(self._expected_blocks(s) for s in self.tokens if self.model[s] == mid)
            assert self.bm.used_blocks(mid) == expected


BlockManagerMachine.TestCase.settings = settings(max_examples=150, stateful_step_count=40,
                                                 deadline=None)
TestBlockManagerMachine = BlockManagerMachine.TestCase


class CountingBlockManagerMachine(BlockManagerMachine):
    track_block_ids = False  # the simulator's mode: same counts, no ids


CountingBlockManagerMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40,
                                                         deadline=None)
TestCountingBlockManagerMachine = CountingBlockManagerMachine.TestCase
