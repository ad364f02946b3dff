"""Events and the event queue of the discrete-event simulator.

Heap key: (time_s, priority, seq). ``seq`` is a push counter, so ties of time and priority pop in
push order and every run with the same inputs pops the same sequence (no dependence on object
ids or hash order).

Priority among same-time events (lower pops first), the order a real unit observes them in:
  JOB_DONE (0) before ARRIVAL (1) before SCHEDULE (2).
A job that ends at t has freed its compute share and KV blocks, and a request that arrives at t
is queued, before the unit decides at t what to start next; so one SCHEDULE per unit and instant
sees everything that happened at that instant.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum


class EventKind(IntEnum):
    JOB_DONE = 0
    ARRIVAL = 1
    SCHEDULE = 2


DEFAULT_PRIORITY: Mapping[EventKind, int] = {k: int(k) for k in EventKind}


@dataclass(frozen=True, slots=True)
class Event:
    """``unit``: the unit it concerns. ``ref``: JOB_DONE -> job id, ARRIVAL -> trace index."""

    time_s: float
    kind: EventKind
    unit: int
    ref: int = -1


class EventQueue:
    """A min-heap of events keyed by (time_s, priority[kind], push sequence)."""

    def __init__(self, priority: Mapping[EventKind, int] = DEFAULT_PRIORITY) -> None:
        missing = [k.name for k in EventKind if k not in priority]
        if missing:
            raise ValueError(f"priority lacks event kinds {missing}")
        self._prio = {k: int(priority[k]) for k in EventKind}
        self._heap: list[tuple[float, int, int, Event]] = []
        self._seq = 0

    def priorities(self) -> dict[EventKind, int]:
        """The priority of each kind (lower pops first among same-time events)."""
        return dict(self._prio)

    def push(self, ev: Event) -> None:
        heapq.heappush(self._heap, (ev.time_s, self._prio[ev.kind], self._seq, ev))
        self._seq += 1

    def pop(self) -> Event:
        return heapq.heappop(self._heap)[3]

    def peek_time_s(self) -> float:
        return self._heap[0][0]

    def __len__(self) -> int:
        return len(self._heap)
