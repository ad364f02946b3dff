"""Build the backend a config asks for."""

from __future__ import annotations

import importlib.util
import logging

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


def _runtime(cfg: ServeConfig) -> UnitBackend:
    from muxserve.engine.runtime import UnitConfig
    from muxserve.server.runtime_backend import RuntimeBackend

    unit = UnitConfig.of(dict(cfg.models), mode=cfg.mode, dtype=cfg.dtype,
                         kv_pool_bytes=cfg.kv_pool_mib * 2**20)
    return RuntimeBackend(unit)
