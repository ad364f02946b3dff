"""A worker process: one model, one phase, its compute share; runs jobs the unit sends.

The runner it receives was built in the unit process and its tensors (weights, KV pool) live in
shared memory, so unpickling it maps the same pages (torch passes their file descriptors):
workers hold no weight or KV copies of their own. ``WorkerHandle`` is the unit's side: start,
send, restart after a death.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
import traceback
from multiprocessing.connection import Connection
from typing import Any

from muxserve.engine.runtime.messages import JobDone, JobFailed, JobMsg, WorkerReady
from muxserve.engine.runtime.shares import ShareGrant, apply_grant
from muxserve.types import Phase


def worker_main(runner: Any, label: str, seed: int | None, conn: Connection,
                grant: ShareGrant, pack: bool = False) -> None:
    """Serve jobs until the unit sends None or closes the pipe, then exit at once: interpreter
    finalization after torch took seconds of CPU per worker (measured ~5 s on a busy 2-core
    machine), and a worker has nothing to flush (its results are sent, the memory is the
    unit's)."""
    if pack:  # a private packed copy (UnitConfig.pack_weights); the shared one stays mapped
        runner.pack_weights()
    _serve(runner, label, seed, conn, grant)
    conn.close()
    os._exit(0)


def _serve(runner: Any, label: str, seed: int | None, conn: Connection,
           grant: ShareGrant) -> None:
    import torch

    from muxserve.engine.model_runner import SeqInput
    from muxserve.engine.sampling import Sampler, make_generator
    from muxserve.types import SamplingParams

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the unit's to handle
    torch.set_num_threads(max(1, len(grant.cores)) if grant.cores else 1)
    cores = apply_grant(grant, None)
    sampler = Sampler(seed)
    conn.send(WorkerReady(os.getpid()))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):
            return
        if msg is None:
            return
        assert isinstance(msg, JobMsg), f"{label}: unexpected message {type(msg).__name__}"
        t0 = time.perf_counter()
        try:
            cores = apply_grant(msg.grant, cores)
            items = [SeqInput(s.token_ids, s.start_pos, s.block_table) for s in msg.seqs]
            logits = runner.execute(items)
            params = [SamplingParams(max_tokens=1, temperature=s.temperature, top_p=s.top_p,
                                     top_k=s.top_k) for s in msg.seqs]
            gens = [None if s.seed is None else make_generator(s.seed) for s in msg.seqs]
            tokens = sampler.sample(logits, params, gens)
        except Exception as e:  # a bad job must not take the worker down
            conn.send(JobFailed(msg.job_id, f"{label}: {type(e).__name__}: {e}\n"
                                            f"{traceback.format_exc(limit=4)}"))
            continue
        conn.send(JobDone(msg.job_id, tuple(tokens), time.perf_counter() - t0))


class WorkerHandle:
    """The unit's handle on one (model, phase) worker. Jobs sent before the worker is ready
    wait in an outbox (a restart takes seconds; the unit loop must not block on it)."""

    def __init__(self, ctx: Any, model_id: int, name: str, phase: Phase, runner: Any,
                 seed: int | None, env: dict[str, str], grant: ShareGrant,
                 pack: bool = False) -> None:
        self.ctx, self.model_id, self.name, self.phase = ctx, model_id, name, phase
        self.runner, self.seed, self.env, self.grant = runner, seed, env, grant
        self.pack = pack
        self.label = f"{name}/{phase.value}"
        self.restarts = 0
        self.generation = 0  # bumped per (re)start, so stale wait() hits are ignored
        self.inflight: Any = None  # the scheduler Job running on it
        self.ready = False
        self.pid: int | None = None
        self._outbox: list[JobMsg] = []
        self.process: mp.process.BaseProcess | None = None
        self.conn: Connection | None = None

    def start(self) -> None:
        parent, child = self.ctx.Pipe()
        proc = self.ctx.Process(target=worker_main, name=f"muxserve-{self.label}", daemon=True,
                                args=(self.runner, self.label, self.seed, child, self.grant,
                                      self.pack))
        saved = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)  # spawn copies the environment at start (MPS share)
        try:
            proc.start()
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        child.close()
        self.process, self.conn = proc, parent
        self.ready, self.pid, self.inflight = False, None, None
        self.generation += 1

    def on_ready(self, msg: WorkerReady) -> None:
        assert self.conn is not None
        self.ready, self.pid = True, msg.pid
        for job in self._outbox:
            self.conn.send(job)
        self._outbox.clear()

    def send(self, job: JobMsg) -> None:
        assert self.conn is not None
        if self.ready:
            self.conn.send(job)
        else:
            self._outbox.append(job)

    def exit_description(self) -> str:
        assert self.process is not None
        self.process.join(timeout=1.0)
        code = self.process.exitcode
        if code is not None and code < 0:
            try:
                return f"killed by {signal.Signals(-code).name}"
            except ValueError:
                return f"killed by signal {-code}"
        return f"exit code {code}"

    def restart(self) -> None:
        """Start a fresh process after a death (the weights and pool are still shared)."""
        if self.conn is not None:
            self.conn.close()
        self._outbox.clear()
        self.restarts += 1
        self.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Ask the worker to exit; kill it if it does not within timeout_s."""
        if self.process is None:
            return
        try:
            if self.conn is not None and self.process.is_alive():
                self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(timeout_s)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(timeout_s)
        if self.conn is not None:
            self.conn.close()
        self.process, self.conn = None, None
