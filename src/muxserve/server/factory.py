"""Build the backend a config asks for."""

from __future__ import annotations

import importlib.util
import logging
from typing import Any

from muxserve.server.backend import UnitBackend
from muxserve.server.config import ServeConfig

log = logging.getLogger(__name__)


def runtime_available() -> bool:
    return importlib.util.find_spec("muxserve.engine.runtime") is not None


def make_backend(cfg: ServeConfig) -> UnitBackend:
    """The unit runtime (separate processes) when it exists, else the in-process engine.
    `backend: inproc` forces the in-process one (one engine thread, muxserve mode only)."""
    kind = cfg.backend
    if kind == "auto":
        kind = "runtime" if runtime_available() else "inproc"
    if kind == "runtime":
        return _runtime(cfg)
    if cfg.mode != "muxserve":  # pragma: no cover - a warning only
        log.warning("the inproc backend runs one shared engine; mode %r is ignored", cfg.mode)
    from muxserve.server.inproc import InprocBackend

    return InprocBackend(cfg.models, dtype=cfg.dtype, kv_pool_bytes=cfg.kv_pool_mib * 2**20)


def check_backend_config(cfg: ServeConfig) -> None:
    """Raise ValueError for a config the chosen backend cannot serve (before any loading)."""
    if cfg.backend != "inproc" and (cfg.backend == "runtime" or runtime_available()):
        unit_config(cfg)
    elif cfg.model_options:
        log.warning("the inproc backend ignores per-model placement options")


def _runtime(cfg: ServeConfig) -> UnitBackend:
    unit = unit_config(cfg)
    from muxserve.server.runtime_backend import RuntimeBackend

    return RuntimeBackend(unit)


def unit_config(cfg: ServeConfig):  # type: ignore[no-untyped-def]
    """The runtime's UnitConfig: one unit on this machine with every served model."""
    from muxserve.engine.runtime import ModelSpec, UnitConfig

    specs = []
    for name, source in cfg.models.items():
        try:
            opts: dict[str, Any] = dict(cfg.model_options.get(name, {}))
            specs.append(ModelSpec(name, source, **opts))
        except (TypeError, ValueError) as e:
            raise ValueError(f"models: {name}: {e}") from e
    return UnitConfig(tuple(specs), mode=cfg.mode, dtype=cfg.dtype,
                      kv_pool_bytes=cfg.kv_pool_mib * 2**20, pack_weights=cfg.pack_weights)
