"""Huge-page advice for the big engine tensors (KV pool, AMX tiles)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from muxserve.engine.memory import HUGE_PAGE_BYTES, advise_hugepages, empty_on_hugepages

THP = Path("/sys/kernel/mm/transparent_hugepage/enabled")
thp_on = (sys.platform.startswith("linux") and THP.exists()
          and "[never]" not in THP.read_text())


@pytest.mark.skipif(not thp_on, reason="no transparent huge pages here")
def test_a_large_fresh_tensor_takes_the_advice_and_stays_usable() -> None:
    t = empty_on_hugepages((8 * HUGE_PAGE_BYTES // 4,), torch.float32)
    assert advise_hugepages(t)  # advising twice is fine too
    t.fill_(3.0)
    assert t.sum().item() == 3.0 * t.numel()


def test_small_tensors_and_the_env_switch_skip_the_advice(monkeypatch) -> None:
    assert not advise_hugepages(torch.empty(1000))  # under two huge pages: nothing to align
    monkeypatch.setenv("MUXSERVE_HUGEPAGES", "0")
    assert not advise_hugepages(torch.empty(8 * HUGE_PAGE_BYTES // 4))
