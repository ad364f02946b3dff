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
    # This machine (2-core x86_64 Xeon, 24 GiB), MEASURED, not guessed: fp32 numpy matmul FLOP/s
    # (no bf16 BLAS on CPU) and copy bandwidth (read + write bytes), best of 5, while shared:
    #   .venv/bin/python benchmarks/measure_cpu.py   (2026-11-25: 53.0 GFLOP/s, 9.52 GB/s)
    "cpu-2core": DeviceSpec("cpu-2core", 24 * GIB, 2, 53.0e9, 9.52e9, kind="cpu"),
}


def get_device(name: str) -> DeviceSpec:
    try:
        return DEVICE_PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown device preset {name!r}; valid: {', '.join(sorted(DEVICE_PRESETS))}"
                         ) from None


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
            raise ValueError(f"bad cluster {text!r}; expected NODESxDEVICESxPRESET like 4x8xa100-80g")
        nodes, per = int(m.group(1)), int(m.group(2))
        if nodes < 1 or per < 1:
            raise ValueError(f"bad cluster {text!r}: nodes and devices per node must be >= 1")
        return cls(nodes, per, get_device(m.group(3)))
