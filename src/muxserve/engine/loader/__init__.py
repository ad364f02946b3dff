"""Model loading: built-in GGUF models, local .gguf files, Hugging Face folders, random weights.

    from muxserve.engine.loader import load_model
    m = load_model("smollm2-135m", dtype=torch.bfloat16)
    m.arch, m.weights["model.embed_tokens.weight"], m.tokenizer.encode("hi")

See docs/loader.md.
"""

from muxserve.engine.loader.layout import weight_shapes
from muxserve.engine.loader.load import LoadedModel, load_model
from muxserve.engine.loader.sources import MODEL_SOURCES, BuiltinModel

__all__ = ["MODEL_SOURCES", "BuiltinModel", "LoadedModel", "load_model", "weight_shapes"]
