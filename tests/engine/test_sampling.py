"""Sampler: greedy, temperature, top-k, top-p, per-request seeds inside one batch."""

from __future__ import annotations

import math

import pytest
import torch

from muxserve.engine.sampling import Sampler, filtered_probs, first_argmax, make_generator
from muxserve.types import SamplingParams

V = 50


def _logits(rows: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 3


def test_greedy_is_argmax_per_row() -> None:
    logits = _logits(6)
    params = [SamplingParams(temperature=0.0)] * 6
    assert Sampler(0).sample(logits, params, [None] * 6) == logits.argmax(-1).tolist()


@pytest.mark.parametrize("params", [SamplingParams(temperature=1.5, top_k=1),
                                    SamplingParams(temperature=2.0, top_p=1e-6),
                                    SamplingParams(temperature=0.7, top_p=1e-6, top_k=5)])
def test_top_k_one_and_tiny_top_p_are_greedy(params: SamplingParams) -> None:
    logits = _logits(8, seed=1)
    gens = [make_generator(i) for i in range(8)]
    for _ in range(5):
        assert Sampler(0).sample(logits, [params] * 8, gens) == logits.argmax(-1).tolist()


def test_same_seed_same_tokens_whatever_the_neighbours() -> None:
    row = _logits(1, seed=2)[0]
    p = SamplingParams(temperature=1.0, seed=7)
    gen_alone = make_generator(7)
    alone = [Sampler(1).sample(row[None], [p], [gen_alone])[0] for _ in range(20)]
    # Same row in the middle of a batch with other seeded and unseeded rows, different sampler.
    gen_mixed = make_generator(7)
    others = [SamplingParams(temperature=1.3, top_p=0.9), SamplingParams(temperature=0.0),
              SamplingParams(temperature=0.8, top_k=3, seed=123)]
    mixed = []
    for step in range(20):
        batch = torch.cat([_logits(1, 100 + step), row[None], _logits(2, 200 + step)])
        params = [others[0], p, others[1], others[2]]
        gens = [None, gen_mixed, None, make_generator(step)]
        mixed.append(Sampler(99).sample(batch, params, gens)[1])
    assert mixed == alone
    assert len(set(alone)) > 1  # really sampled, not greedy


def test_unseeded_requests_use_the_sampler_seed() -> None:
    logits = _logits(4, seed=3)
    p = [SamplingParams(temperature=1.0)] * 4
    a = [Sampler(5).sample(logits, p, [None] * 4) for _ in range(3)]
    b = [Sampler(5).sample(logits, p, [None] * 4) for _ in range(3)]
    assert a == b


def _chi_square(counts: torch.Tensor, probs: torch.Tensor) -> float:
    n = float(counts.sum())
    expected = probs * n
    keep = expected > 5  # pool the tail, the usual validity rule
    chi = float(((counts[keep] - expected[keep]) ** 2 / expected[keep]).sum())
    rest_obs, rest_exp = float(counts[~keep].sum()), float(expected[~keep].sum())
    if rest_exp > 0:
        chi += (rest_obs - rest_exp) ** 2 / rest_exp
    return chi


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_temperature_draws_match_softmax(temperature: float) -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0, -3.0]])
    probs = torch.softmax(logits[0] / temperature, dim=-1)
    gen = make_generator(11)
    sampler, p = Sampler(0), SamplingParams(temperature=temperature)
    n = 4000
    counts = torch.zeros(6)
    for _ in range(n):
        counts[sampler.sample(logits, [p], [gen])[0]] += 1
    # 5 degrees of freedom: P(chi2 > 25) ~ 1e-4, so a correct sampler fails this ~never,
    # while sampling at temperature 1 when 0.5 or 2 was asked gives chi2 in the hundreds.
    assert _chi_square(counts, probs) < 25.0
    wrong = torch.softmax(logits[0], dim=-1) if temperature != 1.0 else torch.full((6,), 1 / 6)
    assert _chi_square(counts, wrong) > 25.0


def test_top_k_and_top_p_keep_the_right_tokens() -> None:
    logits = torch.log(torch.tensor([[0.4, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4]]))
    full = filtered_probs(logits, [SamplingParams(top_k=2), SamplingParams(top_p=0.65)])
    # top_k=2 keeps 0.4 and 0.3; top_p=0.65 keeps 0.4 and 0.3 (0.4 < 0.65 <= 0.7).
    assert torch.allclose(full[0], torch.tensor([4 / 7, 3 / 7, 0, 0]))
    assert torch.allclose(full[1], torch.tensor([0, 0, 3 / 7, 4 / 7]))


def test_top_p_one_keeps_the_whole_tail() -> None:
    logits = torch.zeros(1, 1000)
    probs = filtered_probs(logits, [SamplingParams(top_p=1.0, top_k=999)])
    assert int((probs > 0).sum()) == 999
    assert math.isclose(float(probs.sum()), 1.0, rel_tol=1e-5)


def test_unfiltered_row_keeps_its_vocabulary_next_to_a_filtering_row() -> None:
    logits = _logits(2, seed=5)
    probs = filtered_probs(logits, [SamplingParams(top_k=2), SamplingParams(temperature=0.5)])
    assert int((probs[0] > 0).sum()) == 2
    assert torch.equal(probs[1], torch.softmax(logits[1] / 0.5, dim=-1))


def test_sampled_tokens_respect_top_k() -> None:
    logits = _logits(3, seed=4)
    p = SamplingParams(temperature=5.0, top_k=3, seed=1)
    allowed = logits.topk(3, dim=-1).indices.tolist()
    gens = [make_generator(i) for i in range(3)]
    seen: list[set[int]] = [set(), set(), set()]
    for _ in range(200):
        for r, t in enumerate(Sampler(0).sample(logits, [p] * 3, gens)):
            seen[r].add(t)
    for r in range(3):
        assert seen[r] == set(allowed[r])


def _reference_keep(logits: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Full sort of one row: top-k, then the top-p nucleus of the renormalised top-k."""
    values, index = logits.sort(descending=True)
    if 0 < top_k < len(values):
        values = values.masked_fill(torch.arange(len(values)) >= top_k, float("-inf"))
    probs = torch.softmax(values, dim=-1)
    keep = probs > 0
    if top_p < 1.0:
        keep &= (probs.cumsum(-1) - probs) < top_p
    return torch.zeros(len(values), dtype=torch.bool).scatter(0, index, keep)


@pytest.mark.parametrize("scale", [0.3, 3.0, 30.0])  # nucleus far beyond / around / inside 1024
def test_candidate_shortcut_equals_a_full_sort(scale: float) -> None:
    logits = torch.randn(6, 5000, generator=torch.Generator().manual_seed(7)) * scale
    params = [SamplingParams(top_p=0.9), SamplingParams(top_p=0.5, top_k=2000),
              SamplingParams(top_k=7), SamplingParams(top_p=0.99),
              SamplingParams(top_p=0.3, top_k=20), SamplingParams(temperature=0.5)]
    probs = filtered_probs(logits, params)
    for r, p in enumerate(params):
        expected = _reference_keep(logits[r] / p.temperature, p.top_k, p.top_p)
        assert torch.equal(probs[r] > 0, expected), (r, int(expected.sum()))
    sizes = [int((probs[r] > 0).sum()) for r in range(6)]
    assert sizes[2] == 7 and sizes[5] == int((torch.softmax(logits[5] / 0.5, -1) > 0).sum())
    if scale == 0.3:
        assert sizes[0] > 1024  # the fallback to a full sort really ran


@pytest.mark.parametrize("vocab", [49152, 262144, 32000, 50257, 100, 8192])
def test_first_argmax_equals_torch_argmax_with_ties_and_nan(vocab: int) -> None:
    g = torch.Generator().manual_seed(vocab)
    x = torch.randn(6, vocab, generator=g)
    x[1, vocab // 3] = x[1, vocab - 1] = 99.0          # tie across chunks: the first wins
    x[2, 5] = x[2, 6] = 99.0                           # tie inside one chunk
    x[3] = 0.0                                         # all equal: index 0
    x[4, vocab // 2] = float("nan")                    # argmax picks the NaN
    x[5, -1] = 99.0                                    # maximum in the last chunk
    assert torch.equal(first_argmax(x), x.argmax(dim=-1))
    assert torch.equal(first_argmax(x.bfloat16()), x.bfloat16().argmax(dim=-1))
