"""Profile tables: measured prefill/decode latencies, their JSON file format, and interpolation.

File format (the original MuxServe A100 profile, and what ``muxserve profile`` writes)::

    {model: {num_gpus: {sm_pct: {batch: {seq_len: {"prefill": ms, "decoding": ms}}}}}}

All keys are decimal strings (JSON objects only have string keys). ``sm_pct`` is the compute share
in percent (a GPU's MPS SM percentage, a CPU's core fraction x 100). A value of -1 means "not
measured". For prefill the input is batch x seq_len tokens; for decoding the KV cache holds
batch x seq_len tokens and the input is batch tokens. An optional top-level ``"_meta"`` object
(any key starting with ``_``) carries provenance (device, command, date) and is ignored by readers.

Interpolation (see docs/costmodel.md for the reasoning):
- batch and seq_len: piecewise *linear* in the raw values. Bilinear interpolation reproduces
  exactly any latency of the form a + b*batch + c*seq + d*batch*seq, which is what prefill
  (linear in tokens = batch*seq) and decode (weights + per-seq compute + KV read of batch*seq)
  look like; log-space interpolation would bend those straight lines.
- share: piecewise linear in 1/share, which is exact for a + b/share (compute-bound work).
- Missing (-1) entries are never read: on load each one is filled by linear extrapolation along
  batch (then seq_len) from its two nearest *measured* neighbours, slope clamped at >= 0.
- Outside the grid: linear extrapolation above the largest batch/seq/1/share (slope >= 0),
  clamped below the smallest seq_len/batch (those latencies are overhead-dominated floors).
"""

from __future__ import annotations

import bisect
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PHASES = ("prefill", "decoding")
MISSING = -1.0
OUTLIER_RATIO = 1.5


@dataclass(frozen=True)
class ProfileEntry:
    """One measured grid point. A latency of -1 means the phase was not measured there."""

    model: str
    num_gpus: int
    sm_pct: int
    batch: int
    seq_len: int
    prefill_ms: float
    decode_ms: float


@dataclass(frozen=True)
class _Grid:
    """A complete (sm, batch, seq) grid of one (model, num_gpus, phase); no holes after filling."""

    sm_pcts: tuple[int, ...]
    batches: tuple[int, ...]
    seq_lens: tuple[int, ...]
    values: dict[tuple[int, int, int], float]  # (sm, batch, seq) -> ms, measured or filled
    measured: frozenset[tuple[int, int, int]]


def _lerp_axis(axis: Sequence[float], x: float, clamp_low: bool) -> tuple[int, int, float]:
    """Bracket x on a sorted axis: (i, j, w) with value = (1-w)*v[i] + w*v[j].

    Below the axis: clamp (w=0 on the first point) or extrapolate from the first two points.
    Above: extrapolate from the last two points (w > 1). A one-point axis always clamps.
    """
    n = len(axis)
    if n == 1:
        return 0, 0, 0.0
    if x <= axis[0]:
        if clamp_low or x == axis[0]:
            return 0, 0, 0.0
        return 0, 1, (x - axis[0]) / (axis[1] - axis[0])
    if x >= axis[-1]:
        return n - 2, n - 1, (x - axis[n - 2]) / (axis[n - 1] - axis[n - 2])
    j = bisect.bisect_right(axis, x)
    i = j - 1
    return i, j, (x - axis[i]) / (axis[j] - axis[i])


def _combine(v_i: float, v_j: float, w: float) -> float:
    """Interpolate, or extrapolate with the slope clamped so latency never falls with more work."""
    if w == 0.0:
        return v_i
    if w == 1.0:  # exact at measured points (v_i + (v_j - v_i) can be off by one ulp)
        return v_j
    if w < 1.0:
        return v_i + w * (v_j - v_i)
    return v_j + (w - 1.0) * max(0.0, v_j - v_i)


def _fill_line(points: list[tuple[int, float]], x: int) -> float | None:
    """Linear extrapolation at x from the two measured points nearest to it (slope >= 0)."""
    if not points:
        return None
    if len(points) == 1:
        return points[0][1]
    near = sorted(points, key=lambda p: (abs(p[0] - x), p[0]))[:2]
    (x0, y0), (x1, y1) = sorted(near)
    slope = max(0.0, (y1 - y0) / (x1 - x0))
    return max(y0 + slope * (x - x0), 0.0) if x < x0 else y1 + slope * (x - x1)


def _build_grid(raw: dict[tuple[int, int, int], float]) -> _Grid:
    sms = tuple(sorted({k[0] for k in raw}))
    bs = tuple(sorted({k[1] for k in raw}))
    ss = tuple(sorted({k[2] for k in raw}))
    measured = {k: v for k, v in raw.items() if v >= 0}
    if not measured:
        raise ValueError("profile grid has no measured entries")
    values = dict(measured)
    for sm in sms:
        for b in bs:
            for s in ss:
                if (sm, b, s) in values:
                    continue
                along_b = [(bb, measured[(sm, bb, s)]) for bb in bs if (sm, bb, s) in measured]
                along_s = [(x, measured[(sm, b, x)]) for x in ss if (sm, b, x) in measured]
                v = _fill_line(along_b, b) if len(along_b) >= 2 else None
                if v is None:
                    v = _fill_line(along_s, s)
                if v is None:  # nothing measured on either line: use the share's largest value
                    v = max(val for (m, _, _), val in measured.items() if m == sm) if any(
                        m == sm for (m, _, _) in measured) else max(measured.values())
                values[(sm, b, s)] = v
    return _Grid(sms, bs, ss, values, frozenset(measured))


def find_outliers(raw: dict[tuple[int, int, int], float], ratio: float = OUTLIER_RATIO
                  ) -> set[tuple[int, int, int]]:
    """Glitches: measured values more than ``ratio`` x every measured neighbour on the share
    axis, where a larger-share neighbour first counts as slowed down in proportion to the share
    (the most a smaller share can legitimately cost). A job on the next smaller share can only
    be faster by noise, so a 1.5x jump over both neighbours is a measurement glitch (the A100
    file has a few, e.g. llama-30b/4 GPUs/100%/batch 64/seq 64 decode: 231 ms where 90% took
    27 ms). Without the share scaling, a CPU profile's 1-core value 1.6x its 2-core value (50%
    and 100% shares: legitimately up to 2x) was dropped as a glitch and refilled badly."""
    sms = sorted({k[0] for k in raw})
    out = set()
    for (sm, b, s), v in raw.items():
        if v < 0:
            continue
        i = sms.index(sm)
        near = []
        for other in sms[max(i - 1, 0):i] + sms[i + 1:i + 2]:
            x = raw.get((other, b, s), MISSING)
            if x >= 0:
                near.append(x * max(1.0, other / sm))
        if near and v > ratio * max(near):
            out.add((sm, b, s))
    return out


class ProfileTable:
    """Measured latencies of several models, indexed by (model, num_gpus, phase).

    drop_outliers: treat the glitches :func:`find_outliers` finds as unmeasured (they are then
    filled from their neighbours like -1 entries; listed in ``outliers``). Off by default: the
    reader reproduces the file exactly.
    """

    def __init__(self, entries: Iterable[ProfileEntry], drop_outliers: bool = False,
                 meta: dict[str, Any] | None = None):
        self.meta: dict[str, Any] = dict(meta or {})  # the file's "_meta" (device, command, ...)
        raw: dict[tuple[str, int, str], dict[tuple[int, int, int], float]] = {}
        self._entries: list[ProfileEntry] = []
        for e in entries:
            self._entries.append(e)
            for phase, v in zip(PHASES, (e.prefill_ms, e.decode_ms), strict=True):
                raw.setdefault((e.model, e.num_gpus, phase), {})[(e.sm_pct, e.batch, e.seq_len)] = (
                    float(v))
        self.outliers: list[tuple[str, int, str, int, int, int, float]] = []
        if drop_outliers:
            for (m, g, ph), grid in raw.items():
                for k in sorted(find_outliers(grid)):
                    self.outliers.append((m, g, ph, *k, grid[k]))
                    grid[k] = MISSING
        self._grids = {k: _build_grid(v) for k, v in raw.items()
                       if any(x >= 0 for x in v.values())}
        if not self._grids:
            raise ValueError("profile table has no measured entries")
        self._interps: dict[tuple[str, int, str], _Interpolator] = {}

    def entries(self) -> list[ProfileEntry]:
        return list(self._entries)

    def models(self) -> list[str]:
        return sorted({m for m, _, _ in self._grids})

    def num_gpus_of(self, model: str) -> list[int]:
        return sorted({g for m, g, _ in self._grids if m == model})

    def has(self, model: str, num_gpus: int, phase: str) -> bool:
        return (model, num_gpus, phase) in self._grids

    def measured(self, model: str, num_gpus: int, phase: str, sm_pct: int, batch: int,
                 seq_len: int) -> float | None:
        """The measured value at a grid point, or None if it was not measured."""
        g = self._grids.get((model, num_gpus, phase))
        key = (sm_pct, batch, seq_len)
        return g.values[key] if g is not None and key in g.measured else None

    def interpolate(self, model: str, num_gpus: int, phase: str, sm_pct: float, batch: float,
                    seq_len: float) -> float:
        """Latency in ms at any point; exact at measured points (see module docstring)."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; valid: {', '.join(PHASES)}")
        g = self._grids.get((model, num_gpus, phase))
        if g is None:
            raise ValueError(f"no {phase} profile for {model!r} on {num_gpus} device(s); have: "
                             f"{', '.join(f'{m}/tp{t}' for m, t, p in sorted(self._grids))}")
        return self._interp_of(model, num_gpus, phase)(sm_pct, batch, seq_len)

    def _interp_of(self, model: str, num_gpus: int, phase: str) -> _Interpolator:
        key = (model, num_gpus, phase)
        f = self._interps.get(key)
        if f is None:
            f = self._interps[key] = _Interpolator(self._grids[key])
        return f

    def interpolator(self, model: str, num_gpus: int, phase: str
                     ) -> Callable[[float, float, float], float]:
        """``f(sm_pct, batch, seq_len)`` = ``interpolate(model, num_gpus, phase, ...)``, with the
        grid lookups resolved once: for callers that query one grid many times (the simulator)."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; valid: {', '.join(PHASES)}")
        if (model, num_gpus, phase) not in self._grids:
            self.interpolate(model, num_gpus, phase, 100.0, 1.0, 1.0)  # raises the named error
        return self._interp_of(model, num_gpus, phase)


class _Interpolator:
    """One grid's interpolation with its axes and values in nested lists (no tuple-keyed dict
    lookups) and the share bracket memoised per share (a unit uses a handful of shares). The
    arithmetic is the one of the module docstring, operation for operation, so the results are
    bit-identical to a fresh computation."""

    def __init__(self, g: _Grid) -> None:
        self.batches = list(g.batches)
        self.seq_lens = list(g.seq_lens)
        # share axis in 1/share, descending sm -> ascending inverse
        self.inv = [100.0 / sm for sm in reversed(g.sm_pcts)]
        self.sm_pcts = g.sm_pcts
        self.values = {sm: [[g.values[(sm, b, q)] for q in g.seq_lens] for b in g.batches]
                       for sm in g.sm_pcts}
        self._share: dict[float, tuple[list[list[float]], list[list[float]], float]] = {}
        self._batch: dict[float, tuple[int, int, float]] = {}

    def _share_bracket(self, sm_pct: float) -> tuple[list[list[float]], list[list[float]], float]:
        n = len(self.inv)
        si, sj, sw = _lerp_axis(self.inv, 100.0 / sm_pct, clamp_low=True)
        return self.values[self.sm_pcts[n - 1 - si]], self.values[self.sm_pcts[n - 1 - sj]], sw

    def __call__(self, sm_pct: float, batch: float, seq_len: float) -> float:
        sh = self._share.get(sm_pct)
        if sh is None:
            sh = self._share_bracket(sm_pct)
            if len(self._share) < 4096:  # bounded: a sweep over shares must not grow it forever
                self._share[sm_pct] = sh
        vi, vj, sw = sh
        bb = self._batch.get(batch)
        if bb is None:  # batches are integers in practice: a few hundred distinct values
            bb = _lerp_axis(self.batches, batch, clamp_low=True)
            if len(self._batch) < 4096:
                self._batch[batch] = bb
        bi, bj, bw = bb
        qi, qj, qw = _lerp_axis(self.seq_lens, seq_len, clamp_low=True)
        ri, rj = vi[bi], vi[bj]
        at_i = _combine(_combine(ri[qi], ri[qj], qw), _combine(rj[qi], rj[qj], qw), bw)
        ri, rj = vj[bi], vj[bj]
        at_j = _combine(_combine(ri[qi], ri[qj], qw), _combine(rj[qi], rj[qj], qw), bw)
        return _combine(at_i, at_j, sw)


def _intkey(k: str, what: str) -> int:
    try:
        return int(k)
    except ValueError:
        raise ValueError(f"profile {what} key {k!r} is not an integer") from None


def table_from_json(data: dict[str, Any], drop_outliers: bool = False) -> ProfileTable:
    """Parse the nested dict of the file format above."""
    entries: list[ProfileEntry] = []
    for model, by_gpus in data.items():
        if model.startswith("_"):
            continue
        for g, by_sm in by_gpus.items():
            for sm, by_b in by_sm.items():
                for b, by_s in by_b.items():
                    for s, cell in by_s.items():
                        missing = [p for p in PHASES if p not in cell]
                        if missing:
                            raise ValueError(f"profile {model}/{g}/{sm}/{b}/{s} lacks {missing}")
                        entries.append(ProfileEntry(
                            model, _intkey(g, "num_gpus"), _intkey(sm, "sm_pct"),
                            _intkey(b, "batch"), _intkey(s, "seq_len"),
                            float(cell["prefill"]), float(cell["decoding"])))
    meta = data.get("_meta")
    return ProfileTable(entries, drop_outliers, meta if isinstance(meta, dict) else None)


def load_profile(path: str | Path, drop_outliers: bool = False) -> ProfileTable:
    """Read a profile JSON file (the A100 profile or one written by :func:`save_profile`)."""
    with open(path) as f:
        return table_from_json(json.load(f), drop_outliers)


def save_profile(path: str | Path, entries: Iterable[ProfileEntry],
                 meta: dict[str, Any] | None = None) -> None:
    """Write entries in the file format above (unmeasured phases as -1); ``meta`` -> ``_meta``."""
    out: dict[str, Any] = {"_meta": dict(meta)} if meta else {}
    for e in entries:
        for name, v in (("prefill", e.prefill_ms), ("decoding", e.decode_ms)):
            if not (v == MISSING or (math.isfinite(v) and v > 0)):
                raise ValueError(f"{e}: {name} latency must be > 0 or -1, got {v!r}")
        cell = (out.setdefault(e.model, {}).setdefault(str(e.num_gpus), {})
                .setdefault(str(e.sm_pct), {}).setdefault(str(e.batch), {}))
        cell[str(e.seq_len)] = {"prefill": e.prefill_ms, "decoding": e.decode_ms}
    Path(path).write_text(json.dumps(out, indent=1, sort_keys=False) + "\n")
