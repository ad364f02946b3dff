"""Property tests of profile-table interpolation on random tables."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from muxserve.costmodel import ProfileEntry, ProfileTable

SMS, BATCHES, SEQS = (30, 60, 100), (1, 4, 16), (32, 128, 512)


@st.composite
def monotone_tables(draw: st.DrawFn) -> tuple[ProfileTable, dict[tuple[int, int, int], float]]:
    """Random latencies, nondecreasing in batch and seq_len, nonincreasing in share."""
    inc = st.lists(st.floats(0.0, 50.0), min_size=3, max_size=3)
    d_share, d_batch, d_seq = draw(inc), draw(inc), draw(inc)  # share: index 0 = 100%
    cross = draw(st.floats(0.0, 5.0))
    grid = {}
    for i, j, k in itertools.product(range(3), range(3), range(3)):
        v = 1.0 + sum(d_share[: i + 1]) + sum(d_batch[: j + 1]) + sum(d_seq[: k + 1])
        grid[(SMS[2 - i], BATCHES[j], SEQS[k])] = v + cross * j * k
    table = ProfileTable(ProfileEntry("m", 1, sm, b, s, v, v) for (sm, b, s), v in grid.items())
    return table, grid


@settings(max_examples=40, deadline=None)
@given(tg=monotone_tables(), sm=st.floats(30, 100), b=st.floats(1, 16), s=st.floats(32, 512),
       step=st.floats(0.01, 0.5))
def test_exact_bounded_and_monotone(tg: tuple[ProfileTable, dict], sm: float, b: float, s: float,
                                    step: float) -> None:
    table, grid = tg
    for (gsm, gb, gs), v in grid.items():
        assert table.interpolate("m", 1, "prefill", gsm, gb, gs) == v
    v = table.interpolate("m", 1, "prefill", sm, b, s)
    assert min(grid.values()) - 1e-9 <= v <= max(grid.values()) + 1e-9
    # monotone data stay monotone: more batch / longer seq never faster, more share never slower
    assert table.interpolate("m", 1, "prefill", sm, b * (1 + step), s) >= v - 1e-9
    assert table.interpolate("m", 1, "prefill", sm, b, s * (1 + step)) >= v - 1e-9
    assert table.interpolate("m", 1, "prefill", min(100.0, sm * (1 + step)), b, s) <= v + 1e-9
