"""Decoder forward passes in plain PyTorch over the paged KV pool (Llama family, Gemma3)."""

from __future__ import annotations

from collections.abc import Mapping

import torch

from muxserve.config.models import ModelArch
from muxserve.engine.models.gemma3 import Gemma3Model
from muxserve.engine.models.llama import LlamaModel

DecoderModel = LlamaModel | Gemma3Model


def build_model(arch: ModelArch, weights: Mapping[str, torch.Tensor],
                dtype: torch.dtype) -> DecoderModel:
    """The forward pass of arch's family over HF-named weights, converted to dtype."""
    if arch.family == "llama":
        return LlamaModel(arch, weights, dtype)
    if arch.family == "gemma3":
        return Gemma3Model(arch, weights, dtype)
    raise ValueError(f"no forward pass for family {arch.family!r}; valid: llama, gemma3")


__all__ = ["DecoderModel", "Gemma3Model", "LlamaModel", "build_model"]
