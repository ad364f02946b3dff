"""Compute shares: which part of the unit's device a job (or a worker) runs on.

The unit process *acquires* a ``ShareGrant`` for each job it dispatches and *releases* it when
the job ends; the worker process *applies* the grant before running the job. Two layouts of one
interface:

- ``CpuShares``: a share is a set of cores. The unit owns a core set; a job with share s gets
  ``round(s * cores)`` cores (at least one), least-loaded first, and the worker pins itself to
  them (``os.sched_setaffinity``) and runs that many torch threads. Modes pick the layout:
  ``flexible`` (per job, muxserve), ``fixed`` (one core set per model, spatial), ``whole``
  (every job on all cores, temporal).
- ``MpsShares``: a CUDA share is a fixed active-thread percentage per worker process, set by
  ``CUDA_MPS_ACTIVE_THREAD_PERCENTAGE`` in its environment before CUDA starts (MuxServe's
  design; the MPS daemon must run). Grants carry no cores; ``worker_env`` does the work.
  ``green_context_sms`` computes the SM count of a CUDA green context for a share (the
  in-process, root-free alternative).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from muxserve.types import Phase

CPU_LAYOUTS = ("flexible", "fixed", "whole")

# Idle OpenMP threads (libgomp) spin after each parallel region before they sleep; with several
# worker processes per core, a finished worker's spinning threads starve the next job (seen on
# 2 cores: temporal decode steps of a tiny model took ~1 s instead of ~5 ms). Passive waiting
# (OMP_WAIT_POLICY=PASSIVE) fixed that but made a 2-thread job as slow as a 1-thread one
# (threads sleep between the many small ops of a forward: bf16 decode, batch 8, 146 vs 235
# tok/s). A short spin keeps both: 10,000 spins cost ~0.7 ms of CPU per parallel region once
# a job ends (5.3 ms at libgomp's default) and gave 250 tok/s on the same run. Spawned unit
# and worker processes inherit it.
WORKER_ENV = {"GOMP_SPINCOUNT": "10000"}


def set_worker_env() -> dict[str, str]:
    """Set WORKER_ENV in this process's environment (unless the user set it) before spawning
    workers; returns the values in force."""
    for k, v in WORKER_ENV.items():
        os.environ.setdefault(k, v)
    return {k: os.environ[k] for k in WORKER_ENV}


@dataclass(frozen=True)
class ShareGrant:
    """What a worker applies before a job: cores to pin to and threads to use (CPU), or
    nothing (GPU shares are fixed per worker process). share: the fraction it stands for."""

    share: float
    cores: tuple[int, ...] = ()
    threads: int = 0


class CpuShares:
    """Hands out core sets of the unit's cores. Not thread-safe (the unit loop owns it)."""

    def __init__(self, cores: Sequence[int], layout: str, model_ids: Sequence[int],
                 weights: Mapping[int, float] | None = None) -> None:
        """weights: each model's relative size of its fixed core set (layout "fixed"), e.g. its
        decode share; default equal."""
        if layout not in CPU_LAYOUTS:
            raise ValueError(f"unknown share layout {layout!r}; valid: {', '.join(CPU_LAYOUTS)}")
        if not cores or len(set(cores)) != len(cores):
            raise ValueError(f"cores must be distinct CPU ids, got {list(cores)!r}")
        self.cores = tuple(cores)
        self.layout = layout
        self.load = dict.fromkeys(self.cores, 0)  # running jobs pinned to each core
        self.fixed = fixed_core_sets(self.cores, list(model_ids), weights or {})
        self._granted: dict[int, ShareGrant] = {}

    def cores_for(self, share: float) -> int:
        if not 0.0 < share <= 1.0:
            raise ValueError(f"share must be in (0, 1], got {share!r}")
        return min(len(self.cores), max(1, round(share * len(self.cores))))

    def acquire(self, job_id: int, model_id: int, share: float) -> ShareGrant:
        """A grant for the job (recorded until release). Flexible: the least-loaded cores."""
        assert job_id not in self._granted, f"job {job_id} already holds a share"
        if self.layout == "whole":
            cores = self.cores
        elif self.layout == "fixed":
            cores = self.fixed[model_id]
        else:
            k = self.cores_for(share)
            cores = tuple(sorted(sorted(self.cores, key=lambda c: (self.load[c], c))[:k]))
        for c in cores:
            self.load[c] += 1
        grant = ShareGrant(share, cores, len(cores))
        self._granted[job_id] = grant
        return grant

    def initial_grant(self, model_id: int, share: float) -> ShareGrant:
        """Where a worker sits between jobs (not counted as load): its model's fixed set, all
        cores, or (flexible) the first cores of its share's size."""
        if self.layout == "fixed":
            cores = self.fixed[model_id]
        elif self.layout == "whole":
            cores = self.cores
        else:
            cores = self.cores[:self.cores_for(share)]
        return ShareGrant(share, cores, len(cores))

    def release(self, job_id: int) -> None:
        grant = self._granted.pop(job_id)
        for c in grant.cores:
            self.load[c] -= 1
            assert self.load[c] >= 0, f"core {c} released more often than acquired"

    def in_use(self) -> float:
        """Fraction of the unit's cores that running jobs are pinned to (overlaps count twice)."""
        return sum(self.load.values()) / len(self.cores)

    def worker_env(self, model_id: int, phase: Phase) -> dict[str, str]:
        return {}


def fixed_core_sets(cores: tuple[int, ...], model_ids: list[int],
                    weights: Mapping[int, float]) -> dict[int, tuple[int, ...]]:
    """Disjoint contiguous core sets sized by weight when there are enough cores (each >= 1);
    with more models than cores, model i gets core i * cores // models (models share cores,
    but each model's set never changes)."""
    n, k = len(cores), len(model_ids)
    if k == 0:
        return {}
    if k > n:
        return {m: (cores[i * n // k],) for i, m in enumerate(model_ids)}
    w = [max(weights.get(m, 1.0), 1e-9) for m in model_ids]
    ideal = [n * x / sum(w) for x in w]
    # largest remainder, with at least one core each
    sizes = [max(1, math.floor(q)) for q in ideal]
    by_remainder = sorted(range(k), key=lambda i: (-(ideal[i] - math.floor(ideal[i])), i))
    for i in by_remainder[:max(0, n - sum(sizes))]:
        sizes[i] += 1
    while sum(sizes) > n:  # the minimum of one pushed us over: shrink the largest
        big = [i for i in range(k) if sizes[i] > 1]
        sizes[max(big, key=lambda i: (sizes[i] - ideal[i], sizes[i], -i))] -= 1
    out, start = {}, 0
    for m, size in zip(model_ids, sizes, strict=True):
        out[m] = cores[start:start + size]
        start += size
    return out


def apply_grant(grant: ShareGrant, current: tuple[int, ...] | None) -> tuple[int, ...] | None:
    """In a worker: pin to the grant's cores and size torch's thread pool (skipped when
    unchanged, so a steady job stream pays no syscalls). Returns the cores now applied."""
    if not grant.cores or grant.cores == current:
        return current
    import torch  # the worker has it loaded; this module stays importable without torch

    os.sched_setaffinity(0, grant.cores)
    torch.set_num_threads(grant.threads or len(grant.cores))
    return grant.cores


# ---- GPU: CUDA MPS and green contexts (never selected on a CPU machine) ---------------------
MPS_ENV = "CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"


def mps_percentage(share: float) -> int:
    """A share in (0, 1] as MPS's active-thread percentage (1..100, rounded up, as the
    original's per-worker setting)."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"an MPS share must be in (0, 1], got {share!r}")
    return max(1, min(100, math.ceil(round(share * 100, 6))))


class MpsShares:
    """One fixed MPS percentage per worker process: prefill workers get their model's prefill
    share, decode workers its decode share. Jobs inherit their worker's share."""

    def __init__(self, shares: Mapping[tuple[int, Phase], float],
                 pipe_dir: str | None = None) -> None:
        self.percent = {key: mps_percentage(s) for key, s in shares.items()}
        self.pipe_dir = pipe_dir  # CUDA_MPS_PIPE_DIRECTORY of a non-default daemon
        self._granted: dict[int, ShareGrant] = {}

    def worker_env(self, model_id: int, phase: Phase) -> dict[str, str]:
        """Environment a worker process must start with (before it initialises CUDA)."""
        if (model_id, phase) not in self.percent:
            raise ValueError(f"no MPS share for model {model_id} {phase.value}; known: "
                             f"{sorted((m, p.value) for m, p in self.percent)}")
        env = {MPS_ENV: str(self.percent[(model_id, phase)])}
        if self.pipe_dir:
            env["CUDA_MPS_PIPE_DIRECTORY"] = self.pipe_dir
        return env

    def initial_grant(self, model_id: int, share: float) -> ShareGrant:
        return ShareGrant(share)

    def acquire(self, job_id: int, model_id: int, share: float) -> ShareGrant:
        grant = ShareGrant(share)
        self._granted[job_id] = grant
        return grant

    def release(self, job_id: int) -> None:
        del self._granted[job_id]

    def in_use(self) -> float:
        return sum(g.share for g in self._granted.values())


def green_context_sms(share: float, total_sms: int, granularity: int = 8) -> int:
    """SMs of a green context for a share: rounded up to the device's SM-partition granularity
    (8 on Hopper; 2 on older parts), at least one granule, at most all SMs."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"a green-context share must be in (0, 1], got {share!r}")
    if total_sms < 1 or granularity < 1:
        raise ValueError(f"total_sms and granularity must be >= 1, got {total_sms}, {granularity}")
    sms = math.ceil(share * total_sms / granularity) * granularity
    return max(granularity, min(total_sms, sms))
