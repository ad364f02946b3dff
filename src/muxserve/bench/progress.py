"""A live rich progress bar for a bench run: sent, finished and failed requests."""

from __future__ import annotations

import sys
from types import TracebackType

from muxserve.bench.client import Outcome
from muxserve.sim.workload import TraceRequest


class LiveProgress:
    """Context manager; ``on_sent``/``on_done`` are the runner's callbacks. A no-op when off or
    when stderr is not a terminal (CI logs stay clean)."""

    def __init__(self, total: int, on: bool = True) -> None:
        self.total, self.on = total, on and sys.stderr.isatty()
        self.sent = self.done = self.failed = 0

    def __enter__(self) -> LiveProgress:
        if self.on:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                                TextColumn("{task.completed}/{task.total}"), TimeElapsedColumn(),
                                transient=True)
            self.bar.start()
            self.task = self.bar.add_task(self._text(), total=self.total)
        return self

    def _text(self) -> str:
        return f"bench: sent {self.sent}, ok {self.done}, errors {self.failed}"

    def on_sent(self, _r: TraceRequest) -> None:
        self.sent += 1
        if self.on:
            self.bar.update(self.task, description=self._text())

    def on_done(self, o: Outcome) -> None:
        if o.error is None:
            self.done += 1
        else:
            self.failed += 1
        if self.on:
            self.bar.update(self.task, advance=1, description=self._text())

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self.on:
            self.bar.stop()
