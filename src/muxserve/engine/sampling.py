"""Pick the next token of every sequence in one batch, each with its own SamplingParams.

Greedy rows take the argmax. Other rows are divided by their temperature, filtered by top-k and
then top-p (on the top-k-renormalised distribution, as vLLM does), and drawn with their own
``torch.Generator``: a seeded request owns a generator made from its seed, so its tokens do not
depend on which other requests share the batch. Unseeded requests share the sampler's generator.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from muxserve.types import SamplingParams

CANDIDATES = 1024  # tokens sorted for top-p before falling back to a full sort


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator seeded with ``seed`` (None: a nondeterministic seed)."""
    gen = torch.Generator()
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


def first_argmax(x: torch.Tensor, chunk: int = 4096) -> torch.Tensor:
    """Row-wise index of the FIRST maximum of x [B, V], exactly what ``x.argmax(-1)`` returns.

    torch's CPU argmax over a 262k vocabulary took 5.8 ms for 32 rows here (2 threads), more
    than a Gemma3 decode step's attention; a vectorised ``amax`` per chunk, argmax over the
    chunk maxima (the first chunk holding the row maximum) and argmax inside that one chunk
    take 0.85 ms. Ties and NaN resolve as argmax does: the first chunk, then the first index.
    """
    B, V = x.shape
    c = math.gcd(V, chunk)
    if c < 64 or V // c < 2:
        return x.argmax(dim=-1)
    chunks = x.contiguous().view(B, V // c, c)
    j = chunks.amax(dim=-1).argmax(dim=-1)                             # [B] first max chunk
    inner = chunks[torch.arange(B), j].argmax(dim=-1)                  # [B]
    return j * c + inner


class Sampler:
    """Turns logits [B, V] into one token id per row. Holds the generator of unseeded rows."""

    def __init__(self, seed: int | None = None) -> None:
        self._shared = make_generator(seed)

    def sample(self, logits: torch.Tensor, params: Sequence[SamplingParams],
               generators: Sequence[torch.Generator | None]) -> list[int]:
        """logits: [B, V] (any float dtype); params/generators: one per row (None = shared).

        Advances each row's generator by exactly one draw when the row is not greedy.
        """
        assert logits.dim() == 2 and logits.shape[0] == len(params) == len(generators), (
            f"logits {tuple(logits.shape)} vs {len(params)} params, {len(generators)} generators")
        logits = logits.float()
        tokens = first_argmax(logits).tolist()  # greedy answer for every row, vectorised
        rows = [i for i, p in enumerate(params) if not p.greedy]
        if not rows:
            return tokens
        probs = filtered_probs(logits[rows], [params[i] for i in rows])
        # Inverse-CDF draw: one uniform per row from the row's own generator, then one
        # vectorised cumsum + searchsorted (torch.multinomial costs ~30x more per row at a
        # 262k vocabulary). Zero-probability tokens cannot be picked: their cdf does not rise.
        cdf = probs.cumsum(dim=-1)
        u = torch.cat([torch.rand(1, generator=generators[i] or self._shared) for i in rows])
        picks = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True)[:, 0]
        for j, i in enumerate(rows):
            tokens[i] = min(int(picks[j]), probs.shape[-1] - 1)
        return tokens


def filtered_probs(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Probabilities [R, V] in token order after temperature, top-k and top-p, over rows.

    logits: [R, V] float32. Filtered tokens get probability 0. A row's probabilities are
    computed the same way whatever its neighbours ask for (a softmax over the kept tokens in
    token order), so a seeded row draws the same token in any batch.
    """
    temps = torch.tensor([p.temperature for p in params], dtype=torch.float32)
    logits = logits / temps[:, None]
    vocab = logits.shape[-1]
    filtering = [i for i, p in enumerate(params) if 0 < p.top_k < vocab or p.top_p < 1.0]
    if filtering:
        sub = [params[i] for i in filtering]
        keep = _keep_mask(logits[filtering], [p.top_k for p in sub], [p.top_p for p in sub])
        logits[filtering] = logits[filtering].masked_fill(~keep, float("-inf"))
    return torch.softmax(logits, dim=-1)


def _keep_mask(logits: torch.Tensor, top_k: list[int], top_p: list[float]) -> torch.Tensor:
    """[R, V] bool: tokens inside each row's top-k, then inside its top-p nucleus.

    Sorting a 262k vocabulary costs ~30 ms per row, so only the best CANDIDATES tokens (or
    top_k, if larger) are sorted; a top-p row whose nucleus is not inside them (their mass is
    below top_p) is redone over its whole row. Same result as a full sort, faster.
    """
    vocab = logits.shape[-1]
    k = torch.tensor([t if 0 < t < vocab else vocab for t in top_k])
    p = torch.tensor(top_p, dtype=torch.float32)
    finite_k = [t for t in k.tolist() if t < vocab]
    wide = CANDIDATES if bool((p < 1.0).any()) else 0
    n = min(vocab, max([wide, *finite_k]))
    keep, short = _keep_best(logits, k, p, n)
    if short:
        keep[short] = _keep_best(logits[short], k[short], p[short], vocab)[0]
    return keep


def _keep_best(logits: torch.Tensor, k: torch.Tensor, p: torch.Tensor, n: int
               ) -> tuple[torch.Tensor, list[int]]:
    """Keep mask from the n best tokens of each row, and the rows whose nucleus may reach
    beyond them."""
    vocab = logits.shape[-1]
    values, index = logits.topk(n, dim=-1)  # [R, n], descending
    keep = torch.arange(n)[None, :] < k[:, None]
    # Log-normaliser: over the top-k when the row has one (top-p then applies to the
    # renormalised top-k, as in vLLM), else over the whole row.
    lse = torch.where(k < vocab, values.masked_fill(~keep, float("-inf")).logsumexp(dim=-1),
                      logits.logsumexp(dim=-1))
    probs = (values - lse[:, None]).exp().masked_fill(~keep, 0.0)
    # Keep the smallest prefix whose mass reaches top_p: drop a token when the mass strictly
    # before it already reaches top_p. The first token always survives, so top_p -> 0 is greedy.
    # (Rows with top_p == 1 are exempt: float rounding may push their cumsum past 1.)
    mass_before = probs.cumsum(dim=-1) - probs
    keep &= ~((mass_before >= p[:, None]) & (p[:, None] < 1.0))
    short = [] if n == vocab else ((probs.sum(dim=-1) < p) & (p < 1.0)).nonzero()[:, 0].tolist()
    mask = torch.zeros(logits.shape[0], vocab, dtype=torch.bool).scatter(1, index, keep)
    return mask, short
