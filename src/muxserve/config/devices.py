"""Devices and clusters the planner and cost model reason about."""

from __future__ import annotations

import re
from dataclasses import dataclass

GIB = 1024**3


@dataclass(frozen=True)
class DeviceSpec:
    """One accelerator (or this CPU). compute_units: SMs on a GPU, cores on a CPU."""

    name: str
    memory_bytes: int
    compute_units: int
    peak_flops: float  # dense bf16 FLOP/s
    mem_bandwidth_bps: float  # bytes/s
    kind: str = "gpu"


DEVICE_PRESETS: dict[str, DeviceSpec] = {
    "a100-80g": DeviceSpec("a100-80g", 80 * GIB, 108, 312e12, 2.039e12),
    "h100-80g": DeviceSpec("h100-80g", 80 * GIB, 132, 989e12, 3.35e12),
    "h200": DeviceSpec("h200", 141 * GIB, 132, 989e12, 4.8e12),
    "l40s": DeviceSpec("l40s", 48 * GIB, 142, 362e12, 0.864e12),
    # This machine (2-core x86_64 Xeon, 2.6 GHz, AVX-512 + AMX, 24 GiB), MEASURED, not guessed:
    #   nice .venv/bin/python benchmarks/measure_cpu.py --repeats 10   (2026-11-25 14:07 UTC)
    # the least contended of 4 runs (load 3.2; the others ran at load 5-7 and got 2-3x less).
    # peak_flops: fp32 numpy matmul (numpy has no bf16 matmul), the best row: 1 BLAS thread
    # reached 172.9 GFLOP/s, 2 threads 111.3 (the other core was busy), so the idle 2-core peak
    # is higher still. Bandwidth: 2 processes copying, read + write bytes (1 process: 23.8 GB/s).
    "cpu-2core": DeviceSpec("cpu-2core", 24 * GIB, 2, 172.9e9, 26.87e9, kind="cpu"),
}


def get_device(name: str) -> DeviceSpec:
    try:
        return DEVICE_PRESETS[name]
    except KeyError:
        valid = ", ".join(sorted(DEVICE_PRESETS))
        raise ValueError(f"unknown device preset {name!r}; valid: {valid}") from None


@dataclass(frozen=True)
class Cluster:
    """nodes x devices_per_node of one device preset."""

    num_nodes: int
    devices_per_node: int
    device: DeviceSpec

    @property
    def num_devices(self) -> int:
        return self.num_nodes * self.devices_per_node

    @classmethod
    def parse(cls, text: str) -> Cluster:
        """Parse 'NODESxDEVICESxPRESET', e.g. '4x8xa100-80g'."""
        m = re.fullmatch(r"(\d+)x(\d+)x([\w.\-]+)", text.strip())
        if not m:
            raise ValueError(
                f"bad cluster {text!r}; expected NODESxDEVICESxPRESET like 4x8xa100-80g")
        nodes, per = int(m.group(1)), int(m.group(2))
        if nodes < 1 or per < 1:
            raise ValueError(f"bad cluster {text!r}: nodes and devices per node must be >= 1")
        return cls(nodes, per, get_device(m.group(3)))
