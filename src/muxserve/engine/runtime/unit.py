"""The unit process: one UnitScheduler drives one prefill and one decode worker per model.

The loop has nano-vllm's shape, with jobs running concurrently in the workers:
``jobs = scheduler.schedule(now)`` -> send each to its (model, phase) worker on a compute share
-> on each result: stop rules, ``scheduler.update(job, JobResult(...))``, TokenEvents out.
The client talks to it only through one pipe of protocol messages (a job's TokenEvents travel
as one list).
"""

from __future__ import annotations

import logging
import os
import signal
import time
import traceback
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any

import torch.multiprocessing as tmp

from muxserve.engine.protocol import AbortRequest, GenerateRequest, ModelStats, UnitStats
from muxserve.engine.runtime.build import BuiltModel, build_unit
from muxserve.engine.runtime.config import UnitConfig
from muxserve.engine.runtime.live import LiveRequest, check_request, reject
from muxserve.engine.runtime.messages import (
    JobDone,
    JobFailed,
    JobMsg,
    JobRecord,
    Query,
    Reply,
    SeqWork,
    Shutdown,
    UnitFailed,
    UnitReady,
    WorkerReady,
    step_seed,
)
from muxserve.engine.runtime.shares import CpuShares
from muxserve.engine.runtime.worker import WorkerHandle
from muxserve.engine.stop import IncrementalText
from muxserve.scheduler import Job, JobResult, Request, SchedulerConfig, UnitModel, UnitScheduler
from muxserve.types import Phase

log = logging.getLogger(__name__)
IDLE_WAIT_S = 0.5  # wake up this often with nothing to do (quota adaptation is time-driven)
JOB_LOG_LEN = 1_000_000  # job records kept until a "jobs" query collects them (oldest dropped)


def unit_main(config: UnitConfig, conn: Connection) -> None:
    """Entry point of the unit process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the client shuts the unit down
    try:
        loop = UnitLoop(config, conn)
    except Exception as e:
        conn.send(UnitFailed(f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=6)}"))
        return
    try:
        loop.run()
    finally:
        loop.stop_workers()
    # skip interpreter finalization (seconds of CPU after torch, nothing left to flush)
    logging.shutdown()
    conn.close()
    os._exit(0)


class UnitLoop:
    def __init__(self, config: UnitConfig, conn: Connection) -> None:
        self.config, self.conn = config, conn
        self.bm, self.pool, built = build_unit(config)
        self.models: dict[int, BuiltModel] = {b.model_id: b for b in built}
        self.by_name = {b.name: b for b in built}
        cores = config.unit_cores()
        self.shares_of = {b.model_id: _shares(config, i, len(cores))
                          for i, b in enumerate(built)}
        unit_models = [UnitModel(b.model_id, b.name, b.arch, rate_rps=spec.rate_rps,
                                 prefill_share=self.shares_of[b.model_id][0],
                                 decode_share=self.shares_of[b.model_id][1],
                                 max_num_seqs=spec.max_num_seqs)
                       for b, spec in zip(built, config.models, strict=True)]
        self.sched = UnitScheduler(unit_models, self.bm, SchedulerConfig(
            policy=config.policy, prefill_token_cap=config.prefill_token_cap,
            avg_seq_tokens=config.avg_seq_tokens, integrity_checks=config.integrity_checks))
        self.shares = CpuShares(cores, config.share_layout, list(self.models),
                                {m: s[1] for m, s in self.shares_of.items()})
        ctx = tmp.get_context("spawn")
        self.workers = {
            (m, ph): WorkerHandle(ctx, m, b.name, ph, b.runner, config.seed,
                                  self.shares.worker_env(m, ph),
                                  self.shares.initial_grant(m, self._share(m, ph)),
                                  config.pack_weights)
            for m, b in self.models.items() for ph in (Phase.PREFILL, Phase.DECODE)}
        self.reqs: dict[int, LiveRequest] = {}
        self.ids: dict[str, int] = {}
        self._next_rid = 0
        self.max_running_jobs = 0  # most jobs in flight at once (evidence of multiplexing)
        self.job_log: deque[JobRecord] = deque(maxlen=JOB_LOG_LEN)
        self._job_start: dict[int, tuple[float, tuple[int, ...]]] = {}
        self.t0 = time.monotonic()
        self.running = True
        self._start_workers()
        conn.send(UnitReady(tuple(self.by_name), tuple(s.source for s in config.models),
                            tuple(b.arch.max_context for b in built), os.getpid()))

    def _share(self, model_id: int, phase: Phase) -> float:
        return self.shares_of[model_id][phase is Phase.DECODE]

    def now(self) -> float:
        return time.monotonic() - self.t0

    def _start_workers(self) -> None:
        for w in self.workers.values():
            w.start()
        deadline = time.monotonic() + self.config.worker_start_timeout_s
        for w in self.workers.values():
            assert w.conn is not None and w.process is not None
            left = deadline - time.monotonic()
            if not wait([w.conn, w.process.sentinel], max(0.0, left)) or not w.conn.poll():
                raise RuntimeError(f"worker {w.label} did not start ({w.exit_description()})")
            w.on_ready(w.conn.recv())

    # ---- the loop -----------------------------------------------------------------------------
    def run(self) -> None:
        while self.running:
            handles: dict[Any, tuple[str, WorkerHandle | None, int]] = {
                self.conn: ("client", None, 0)}
            for w in self.workers.values():
                assert w.conn is not None and w.process is not None
                handles[w.conn] = ("result", w, w.generation)
                handles[w.process.sentinel] = ("death", w, w.generation)
            ready = wait(list(handles), IDLE_WAIT_S)
            # results before deaths: a worker may die right after sending one
            for obj in sorted(ready, key=lambda o: handles[o][0] == "death"):
                kind, handle, gen = handles[obj]
                if kind == "client":
                    self._drain_client()
                elif handle is not None and gen == handle.generation:
                    if kind == "result":
                        self._on_worker_message(handle)
                    else:
                        self._on_worker_death(handle)
            if not self.running:
                return
            for job in self.sched.schedule(self.now()):
                self._dispatch(job)

    def _drain_client(self) -> None:
        while self.running and self.conn.poll():
            try:
                msg = self.conn.recv()
            except (EOFError, OSError):
                self.running = False  # the client is gone: shut down
                return
            if isinstance(msg, GenerateRequest):
                self._submit(msg)
            elif isinstance(msg, AbortRequest):
                self._abort(msg.req_id)
            elif isinstance(msg, Query):
                self.conn.send(Reply(msg.query_id, self._answer(msg.kind)))
            elif isinstance(msg, Shutdown):
                self.running = False
            else:
                log.warning("unit: ignoring unknown message %r", type(msg).__name__)

    # ---- requests -----------------------------------------------------------------------------
    def _submit(self, req: GenerateRequest) -> None:
        b = self.by_name.get(req.model)
        err = check_request(req, b.arch if b else None, list(self.by_name),
                            req.req_id in self.ids)
        if err is not None:
            self.conn.send(reject(req, err))
            return
        assert b is not None
        prompt = list(req.prompt_token_ids)
        max_output = min(req.params.max_tokens, b.arch.max_context - len(prompt))
        rid = self._next_rid
        try:
            self.sched.add_request(Request(rid, b.model_id, self.now(), len(prompt), max_output),
                                   self.now())
        except ValueError as e:
            self.conn.send(reject(req, str(e)))
            return
        self._next_rid += 1
        text = IncrementalText(b.tokenizer.new_detokenizer(prompt), req.params.stop)
        self.reqs[rid] = LiveRequest(rid, req, b.model_id, text, b.tokenizer.eos_token_ids,
                                     max_output)
        self.ids[req.req_id] = rid

    def _abort(self, req_id: str) -> None:
        rid = self.ids.pop(req_id, None)
        if rid is None:
            return  # unknown or finished: aborts race with finishing
        r = self.reqs.pop(rid)
        self.sched.abort(rid)  # a request inside a running job keeps its blocks until update()
        self.conn.send(r.fail("abort"))

    def _forget(self, r: LiveRequest) -> None:
        del self.reqs[r.rid]
        del self.ids[r.req.req_id]

    # ---- jobs ---------------------------------------------------------------------------------
    def _dispatch(self, job: Job) -> None:
        w = self.workers[(job.model_id, job.phase)]
        assert w.inflight is None, f"{w.label} already runs job {w.inflight}"
        seqs = tuple(self._work(rid, job.phase) for rid in job.req_ids)
        w.inflight = job
        self.max_running_jobs = max(self.max_running_jobs,
                                    sum(x.inflight is not None for x in self.workers.values()))
        grant = self.shares.acquire(job.job_id, job.model_id, job.share)
        self._job_start[job.job_id] = (self.now(), grant.cores)
        w.send(JobMsg(job.job_id, seqs, grant))

    def _work(self, rid: int, phase: Phase) -> SeqWork:
        r = self.reqs[rid]
        p = r.req.params
        n = len(r.output_ids)
        if phase is Phase.PREFILL:  # n > 0: a preempted request recomputes prompt + output
            tokens, start = r.prompt + r.output_ids, 0
        else:
            tokens, start = [r.output_ids[-1]], len(r.prompt) + n - 1
        seed = None if p.seed is None else step_seed(p.seed, n)
        return SeqWork(tokens, start, self.bm.block_table(rid), float(p.temperature),
                       float(p.top_p), int(p.top_k), seed)

    def _on_worker_message(self, w: WorkerHandle) -> None:
        assert w.conn is not None
        try:
            msg = w.conn.recv()
        except (EOFError, OSError):
            self._on_worker_death(w)
            return
        if isinstance(msg, WorkerReady):
            w.on_ready(msg)
            return
        job = w.inflight
        assert job is not None and msg.job_id == job.job_id, f"{w.label}: stray result {msg}"
        w.inflight = None
        self.shares.release(job.job_id)
        if isinstance(msg, JobFailed):
            self._fail_job(job, f"job of model {w.name!r} ({w.phase.value}) failed: {msg.error}")
        else:
            assert isinstance(msg, JobDone)
            start_s, cores = self._job_start.pop(job.job_id)
            self.job_log.append(JobRecord(w.name, w.phase.value, len(job.req_ids),
                                          job.num_tokens, job.context_tokens, job.share, cores,
                                          start_s, self.now(), msg.compute_s))
            self._finish_job(job, msg)

    def _finish_job(self, job: Job, done: JobDone) -> None:
        ended: list[tuple[LiveRequest, int, str | None]] = []
        early = []
        for rid, tok in zip(job.req_ids, done.token_ids, strict=True):
            r = self.reqs.get(rid)
            if r is None:
                continue  # aborted while the job ran
            reason = r.add_token(tok)
            if reason == "stop":
                early.append(rid)
            ended.append((r, tok, reason))
        step = self.sched.update(job, JobResult(job.job_id, tuple(early)), self.now())
        finished = set(step.finished_req_ids)
        events = []
        for r, tok, reason in ended:
            assert (reason is not None) == (r.rid in finished), (
                f"request {r.req.req_id}: engine says {reason}, scheduler "
                f"{'finished' if r.rid in finished else 'running'} it")
            events.append(r.event((tok,), reason))
            if reason is not None:
                self._forget(r)
        if events:
            self.conn.send(events)  # one message per job: a decode step of 64 is one send

    def _fail_job(self, job: Job, error: str) -> None:
        """Fail every live request of the job with an error event and free its blocks."""
        self._job_start.pop(job.job_id, None)
        events = []
        for rid in job.req_ids:
            r = self.reqs.get(rid)
            if r is not None:
                self.sched.abort(rid)
                self._forget(r)
                events.append(r.fail("error", error))
        if events:
            self.conn.send(events)
        self.sched.update(job, JobResult(job.job_id), self.now())

    def _on_worker_death(self, w: WorkerHandle) -> None:
        why = w.exit_description()
        log.warning("unit: worker %s died (%s); restarting it", w.label, why)
        job = w.inflight
        w.restart()
        if job is not None:
            self.shares.release(job.job_id)
            self._fail_job(job, f"worker for model {w.name!r} ({w.phase.value}) died ({why}) "
                                f"while running this request; it was restarted")

    # ---- queries ------------------------------------------------------------------------------
    def _answer(self, kind: str) -> Any:
        if kind == "stats":
            return self.stats()
        if kind == "info":
            return self.info()
        if kind == "jobs":
            records, self.job_log = list(self.job_log), deque(maxlen=JOB_LOG_LEN)
            return records
        return ValueError(f"unknown query {kind!r}; valid: stats, info, jobs")

    def stats(self) -> UnitStats:
        queues = self.sched.queue_lens()
        models = tuple(ModelStats(
            b.name, waiting=queues[m], running=self.sched.num_active(m),
            kv_blocks_used=self.bm.used_blocks(m), prefill_share=self.shares_of[m][0],
            decode_share=self.shares_of[m][1],
            worker_restarts=sum(self.workers[(m, ph)].restarts for ph in Phase))
            for m, b in self.models.items())
        return UnitStats(self.bm.num_blocks, self.bm.used_blocks(), self.shares.in_use(), models)

    def info(self) -> dict[str, Any]:
        """Diagnostics: pids, shared-memory sizes, an integrity check (O(pool))."""
        try:
            self.bm.check_integrity()
            if not any(w.inflight for w in self.workers.values()):
                self.sched.check_integrity()
            integrity = "ok"
        except AssertionError as e:
            integrity = f"FAILED: {e}"
        return {
            "unit_pid": os.getpid(),
            "workers": {w.label: w.pid for w in self.workers.values()},
            "restarts": {w.label: w.restarts for w in self.workers.values()},
            "inflight": {w.label: len(w.inflight.req_ids) if w.inflight else 0
                         for w in self.workers.values()},
            "weight_bytes": {b.name: b.weight_bytes for b in self.models.values()},
            "kv_pool_bytes": self.pool.nbytes,
            "kv_blocks_used": self.bm.used_blocks(),
            "live_requests": len(self.reqs),
            "cores": list(self.shares.cores),
            "fixed_cores": {self.models[m].name: list(c) for m, c in self.shares.fixed.items()},
            "preemptions": self.sched.num_preemptions,
            "max_running_jobs": self.max_running_jobs,
            "integrity": integrity,
        }

    def stop_workers(self) -> None:
        for w in self.workers.values():
            w.stop()


def _shares(config: UnitConfig, i: int, num_cores: int) -> tuple[float, float]:
    """(prefill, decode) share of model i: its spec's, else one core's worth."""
    spec = config.models[i]
    one_core = 1.0 / num_cores
    return (spec.prefill_share or one_core, spec.decode_share or one_core)
