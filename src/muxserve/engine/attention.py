"""Paged attention over the head-wise KV pool.

The pool's storage seen by one model: [num_blocks, 2, tpb, D] (tpb = tokens_per_block), i.e.
`num_blocks * 2` contiguous half-blocks of tpb * D elements, K (kv=0) then V (kv=1) of tpb tokens
of one (layer, KV head). Per model batch (one `execute` call) we build, once, integer indices
shared by all layers' shapes; per layer the attention then costs:

  1. one `index_copy_` writing K/V of all new tokens and heads into pool rows of D elements,
     row `(block * 2 + kv) * tpb + offset`, through `write_rows[layer]`;
  2. one `index_select` gathering every sequence's K/V in chunks of `chunk_tokens(tpb)` (<= 16)
     consecutive tokens through `read_chunks[layer]` into a reused buffer
     [B, 2, H_kv, NC * chunk, D] (NC = chunks of the longest context). A chunk is a contiguous
     run of chunk * D elements inside a half-block, so this runs at memcpy speed and its index
     is small (L * B * 2 * H_kv * NC entries); per-token-row indices were ~16x larger and took
     longer to build than they saved, and whole 64-token half-blocks (SmolLM2) copied up to 63
     padding tokens per sequence. Keys past the longest context are sliced off as a view;
  3. one `scaled_dot_product_attention` with a boolean mask (causal, padding and, for
     sliding-window layers, the window).

A decode step (one new token per sequence) in float32 or bfloat16 skips all three when the fused
CPU kernels are built (`decode`, see muxserve.engine.kernels): it reads K/V straight from the
pool's blocks through `table`, so nothing is gathered and no mask is needed.

GQA without copies: query heads hq = hkv * G + g share KV head hkv. In decode (one query per
sequence) the G query heads of a KV head become G query rows, [B, H_kv, G, D], against the same
K/V; in prefill SDPA's `enable_gqa` maps [B, H_q, S, D] queries onto H_kv heads. Either way the
mask is [B, 1, S, C] and broadcasts over heads.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import chain
from typing import Protocol

import torch
import torch.nn.functional as F

from muxserve.engine import kernels


class Layout(Protocol):
    """What attention needs from `muxserve.kvcache.block_manager.KVLayout` (read-only, so the
    frozen dataclass satisfies it)."""

    @property
    def num_layers(self) -> int: ...
    @property
    def num_kv_heads(self) -> int: ...
    @property
    def head_dim(self) -> int: ...
    @property
    def tokens_per_block(self) -> int: ...


@dataclass(frozen=True)
class AttnBatch:
    """Index tensors of one batch step, shared by all layers of one model.

    B sequences with n_i new tokens each (T = sum n_i, S = max n_i) and contexts
    c_i = start_i + n_i (C = max c_i).
    """

    positions: torch.Tensor      # [T] absolute position of each new token (for RoPE)
    table: torch.Tensor          # [B, NB, L * H_kv] block ids, padded with block 0
    # the gather path's indices and masks (None when built for the fused decode kernel only):
    write_rows: torch.Tensor | None   # [L, T * 2 * H_kv] pool rows of new K/V, order [T, 2, H_kv]
    read_chunks: torch.Tensor | None  # [L, B * 2 * H_kv * NC] pool chunks of `chunk` tokens
    q_index: torch.Tensor | None  # [B * S] token of each padded query slot (None: S == 1)
    out_index: torch.Tensor | None  # [T] padded slot of each token (None: S == 1)
    mask: torch.Tensor | None    # [B, 1, S, C] bool, True = attend (causal + padding)
    local_mask: torch.Tensor | None  # same with the sliding window applied (None: no window)
    last_index: torch.Tensor     # [B] index in [T] of each sequence's last new token
    num_seqs: int
    max_new: int                 # S
    max_context: int             # C
    num_chunks: int              # NC: chunks of the longest context


def chunk_tokens(tokens_per_block: int) -> int:
    """Tokens per gathered chunk: small enough to pad little, big enough to copy at memcpy speed."""
    return math.gcd(tokens_per_block, 16)


def build_attn_batch(num_new: list[int], start_pos: list[int], tables: list[list[list[int]]],
                     layout: Layout, num_pool_blocks: int,
                     sliding_window: int = 0, gather: bool = True) -> AttnBatch:
    """Index tensors for one step; validates that each block table covers its context.

    gather=False (decode only: one new token per sequence) skips the gather path's indices and
    masks, which the fused decode kernel does not use (~0.7 ms of a batch-32 step).
    """
    B, L, H = len(num_new), layout.num_layers, layout.num_kv_heads
    tpb = layout.tokens_per_block
    ctx = [s + n for s, n in zip(start_pos, num_new, strict=True)]
    nblk = [-(-c // tpb) for c in ctx]
    for i, (tab, nb) in enumerate(zip(tables, nblk, strict=True)):
        if len(tab) < nb:
            raise ValueError(f"sequence {i}: block table has {len(tab)} token-blocks, "
                             f"its context of {ctx[i]} tokens needs {nb}")
        if any(len(row) != L * H for row in tab[:nb]):
            raise ValueError(f"sequence {i}: block table rows must have num_layers * "
                             f"num_kv_heads = {L * H} entries")
    NB, C, S = max(nblk), max(ctx), max(num_new)
    # table: [B, NB, L*H] block ids, padded with block 0 (padded keys are masked out)
    flat = torch.tensor(list(chain.from_iterable(chain.from_iterable(
        tab[:nb] for tab, nb in zip(tables, nblk, strict=True)))), dtype=torch.int64)
    if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= num_pool_blocks):
        raise ValueError(f"block ids must be in [0, {num_pool_blocks}), "
                         f"got [{int(flat.min())}, {int(flat.max())}]")
    nblk_t = torch.tensor(nblk)
    seq_of_blk = torch.repeat_interleave(torch.arange(B), nblk_t)
    blk_in_seq = torch.arange(flat.numel() // (L * H)) - torch.repeat_interleave(
        torch.cumsum(nblk_t, 0) - nblk_t, nblk_t)
    table = torch.zeros(B, NB, L * H, dtype=torch.int64)
    table[seq_of_blk, blk_in_seq] = flat.view(-1, L * H)
    kv_off = torch.tensor([0, tpb]).view(1, 1, 2, 1)

    # new tokens: sequence, position
    n_t = torch.tensor(num_new)
    seq_of_tok = torch.repeat_interleave(torch.arange(B), n_t)
    first_tok = torch.cumsum(n_t, 0) - n_t
    idx_in_seq = torch.arange(len(seq_of_tok)) - first_tok[seq_of_tok]
    positions = torch.tensor(start_pos)[seq_of_tok] + idx_in_seq
    if not gather:
        if S != 1:
            raise ValueError(f"gather=False serves decode steps only, got {S} new tokens")
        return AttnBatch(
            positions=positions, table=table, write_rows=None, read_chunks=None, q_index=None,
            out_index=None, mask=None, local_mask=None, last_index=first_tok, num_seqs=B,
            max_new=1, max_context=C, num_chunks=0)
    # write_rows[l, t, kv, h] = (block * 2 + kv) * tpb + pos % tpb
    blk = table[seq_of_tok, positions // tpb].view(-1, L, H).transpose(0, 1)  # [L, T, H]
    write = blk.unsqueeze(2) * (2 * tpb) + kv_off + (positions % tpb).view(1, -1, 1, 1)
    # read_chunks[l, b, kv, h, j] = (table[b, j // r, l*H + h] * 2 + kv) * r + j % r, where
    # r = chunks per half-block
    chunk = chunk_tokens(tpb)
    r, NC = tpb // chunk, -(-C // chunk)
    j = torch.arange(NC)
    halves = table.view(B, NB, L, H)[:, j // r].permute(2, 0, 3, 1).unsqueeze(2) * 2  # [L,B,1,H,NC]
    read = (halves + torch.arange(2).view(1, 1, 2, 1, 1)) * r + j % r               # [L,B,2,H,NC]

    # masks over the padded query slots [B, S] x keys [C]
    q_slot = torch.arange(S).view(1, S)
    q_valid = torch.minimum(q_slot, (n_t - 1).view(B, 1))     # padded slots repeat the last token
    q_pos = torch.tensor(start_pos).view(B, 1) + q_valid       # [B, S]
    k_pos = torch.arange(C).view(1, 1, C)
    mask = (k_pos <= q_pos.unsqueeze(-1)).unsqueeze(1)         # [B, 1, S, C] causal, hides >= c_i
    local = None
    if sliding_window > 0:                                     # HF: key > query - window
        local = mask & (k_pos > q_pos.unsqueeze(-1) - sliding_window).unsqueeze(1)

    q_index = out_index = None
    if S > 1:
        q_index = (first_tok.view(B, 1) + q_valid).reshape(-1)
        out_index = seq_of_tok * S + idx_in_seq
    return AttnBatch(
        positions=positions, table=table, write_rows=write.reshape(L, -1),
        read_chunks=read.reshape(L, -1),
        q_index=q_index, out_index=out_index, mask=mask, local_mask=local,
        last_index=first_tok + n_t - 1, num_seqs=B, max_new=S, max_context=C, num_chunks=NC)


class PagedAttention:
    """Attention of one model over its views of the pool; owns the reused gather buffer, so
    one instance must not run two batches at once (give each worker thread its own runner)."""

    def __init__(self, pool_storage: torch.Tensor, layout: Layout, num_q_heads: int,
                 scale: float) -> None:
        self.H, self.D = layout.num_kv_heads, layout.head_dim
        self.G = num_q_heads // self.H
        self.tpb = layout.tokens_per_block
        self.chunk = chunk_tokens(self.tpb)
        self.scale = scale
        self.rows = pool_storage.view(-1, self.D)                 # [num_blocks * 2 * tpb, D]
        self.chunks = pool_storage.view(-1, self.chunk * self.D)  # [num_blocks*2*tpb/chunk, ...]
        self._buf = torch.empty(0, dtype=pool_storage.dtype)

    def gather_buffer(self, batch: AttnBatch) -> torch.Tensor:
        """[B, 2, H_kv, NC * chunk, D] view of a buffer reused across layers and calls."""
        B, ctx = batch.num_seqs, batch.num_chunks * self.chunk
        n = B * 2 * self.H * ctx * self.D
        if self._buf.numel() < n:
            self._buf = torch.empty(n, dtype=self.rows.dtype)
        return self._buf[:n].view(B, 2, self.H, ctx, self.D)

    def fusable(self, num_new: list[int]) -> bool:
        """Whether `decode` will serve a step with these new-token counts: one per sequence,
        kernels built for the pool's dtype."""
        return max(num_new) == 1 and kernels.ops(self.rows.dtype) is not None

    def can_fuse(self, batch: AttnBatch) -> bool:
        """Whether `decode` serves this batch: one new token per sequence, kernels built."""
        fused = self.fusable([batch.max_new])
        assert fused or batch.write_rows is not None, "batch built without gather indices"
        return fused

    def decode(self, qkv: torch.Tensor, layer: int, batch: AttnBatch, cos: torch.Tensor,
               sin: torch.Tensor, qk_norm: torch.Tensor | None, window: int,
               eps: float) -> torch.Tensor:
        """Fused decode step: qkv [B, (H_q + 2 H_kv) * D] straight from the QKV projection
        (before QK-norm and RoPE); cos/sin [B, D] fp32; qk_norm [H_q + H_kv, D] scales or None;
        window 0 = full attention. Returns [B, H_q * D].

        Modifies the pool: writes the new K/V at each sequence's position of `layer`.
        """
        k = kernels.ops(qkv.dtype)
        assert k is not None and batch.q_index is None, "decode() needs can_fuse(batch)"
        return k.decode_attention(qkv, self.rows, batch.table, batch.positions, cos, sin,
                                  qk_norm, layer, self.H * self.G, self.H, self.D, self.tpb,
                                  window, self.scale, eps)

    def __call__(self, q: torch.Tensor, kv_new: torch.Tensor, layer: int, batch: AttnBatch,
                 buf: torch.Tensor, local: bool) -> torch.Tensor:
        """q: [T, H_q, D]; kv_new: [T, 2 * H_kv, D], K heads then V heads (RoPE applied to K).
        Returns [T, H_q * D].

        Modifies the pool: writes kv_new at the batch's slots of `layer`.
        """
        T = q.shape[0]
        B, S, H, G, D = batch.num_seqs, batch.max_new, self.H, self.G, self.D
        assert batch.write_rows is not None and batch.read_chunks is not None, "gather=False"
        self.rows.index_copy_(0, batch.write_rows[layer], kv_new.reshape(-1, D))
        torch.index_select(self.chunks, 0, batch.read_chunks[layer],
                           out=buf.view(-1, self.chunk * D))
        C = batch.max_context
        k, v = buf[:, 0, :, :C], buf[:, 1, :, :C]                 # [B, H_kv, C, D] views
        mask = batch.local_mask if local and batch.local_mask is not None else batch.mask
        assert mask is not None
        if batch.q_index is None:                                 # decode: S == 1, T == B
            qh = q.view(B, H, G, D)                               # [B, H_kv, G, D]
            o = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask, scale=self.scale)
            return o.reshape(T, H * G * D)
        qh = q.index_select(0, batch.q_index).view(B, S, H * G, D).transpose(1, 2)  # [B,H_q,S,D]
        o = F.scaled_dot_product_attention(qh, k, v, attn_mask=mask, scale=self.scale,
                                           enable_gqa=G > 1)      # [B, H_q, S, D]
        o = o.transpose(1, 2).reshape(B * S, H * G * D)
        assert batch.out_index is not None  # set whenever S > 1
        return o.index_select(0, batch.out_index)                 # [T, H_q * D]
