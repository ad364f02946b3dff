"""Model architectures, devices and clusters: the bottom layer, imported by everything."""

from muxserve.config.models import MODEL_PRESETS, ModelArch, get_model_arch, load_model_arch

__all__ = ["MODEL_PRESETS", "ModelArch", "get_model_arch", "load_model_arch"]
