"""Offline multi-model engine: several models, ONE shared head-wise KV pool, continuous batching.

    llm = MultiModelLLM(["smollm2-135m", "gemma3-270m"], dtype="bfloat16")
    outs = llm.generate([GenerationRequest("smollm2-135m", "Hi", SamplingParams(max_tokens=8))])

Every step runs one model's batch (nano-vllm's shape):
``batch = scheduler.schedule(); logits = runner.execute(batch); self._postprocess(batch, tokens)``.
The policy lives in ``simple_scheduler`` so that the ADBS scheduler can replace it.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import dataclass

import torch

from muxserve.engine.kv_pool import KVPool
from muxserve.engine.loader import LoadedModel, load_model
from muxserve.engine.model_runner import ModelRunner, SeqInput
from muxserve.engine.request import (
    GenerationOutput,
    GenerationRequest,
    Sequence,
    StepOutput,
)
from muxserve.engine.sampling import Sampler, make_generator
from muxserve.engine.simple_scheduler import Batch, SimpleScheduler
from muxserve.engine.stop import IncrementalText
from muxserve.kvcache.block_manager import BlockManager
from muxserve.types import Phase

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
DEFAULT_KV_POOL_BYTES = 512 * 2**20


def parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """'float32' / 'bfloat16' (or the torch dtype itself) -> torch dtype."""
    if isinstance(dtype, torch.dtype) and dtype in DTYPES.values():
        return dtype
    if dtype in DTYPES:
        return DTYPES[dtype]  # type: ignore[index]
    raise ValueError(f"unknown dtype {dtype!r}; valid: {', '.join(DTYPES)}")


@dataclass(frozen=True)
class ServedModel:
    """One loaded model of the engine."""

    name: str  # the name requests use
    model_id: int  # its id in the block manager
    loaded: LoadedModel
    runner: ModelRunner


class MultiModelLLM:
    """Loads every model and serves them from one KVPool + one BlockManager.

    models: sources (each served under the source string itself) or {served name: source};
    a source is a built-in name (``smollm2-135m``, ``gemma3-270m``), a .gguf path, a Hugging
    Face folder or ``random:<preset>``. The pool is ``num_blocks`` blocks of ``block_numel``
    elements, or as many as fit in ``kv_pool_bytes`` (default 512 MiB); give at most one.
    seed: seeds the generator of requests that have no seed of their own.
    pack_weights: reorder bf16 projections once (AMX tiles, else oneDNN; faster, same results;
    see `muxserve.engine.models.linear`); no effect in float32.
    """

    def __init__(self, models: Seq[str] | Mapping[str, str], dtype: str | torch.dtype = "float32",
                 kv_pool_bytes: int | None = None, num_blocks: int | None = None,
                 block_numel: int = 8192, max_prefill_tokens: int = 2048,
                 max_num_seqs: int = 256, seed: int | None = None,
                 cache_dir: str | None = None, pack_weights: bool = True) -> None:
        sources = _served_names(models)
        self.dtype = parse_dtype(dtype)
        num_blocks = _num_blocks(num_blocks, kv_pool_bytes, block_numel, self.dtype)
        self.blocks = BlockManager(num_blocks, block_numel)
        self.pool = KVPool(num_blocks, block_numel, self.dtype)
        self.models: dict[str, ServedModel] = {}
        for model_id, (name, source) in enumerate(sources.items()):
            loaded = load_model(source, dtype=self.dtype, cache_dir=cache_dir)
            arch = loaded.arch
            layout = self.blocks.register_model(model_id, arch.num_layers, arch.num_kv_heads,
                                                arch.head_dim)
            runner = ModelRunner(arch, loaded.weights, self.pool, layout, self.dtype)
            if pack_weights:
                runner.pack_weights()
            self.models[name] = ServedModel(name, model_id, loaded, runner)
            log.info("loaded %s (%s) as model %d", name, source, model_id)
        self._by_id = {m.model_id: m for m in self.models.values()}
        self.scheduler = SimpleScheduler(self.blocks, list(self._by_id), max_prefill_tokens,
                                         max_num_seqs)
        self.sampler = Sampler(seed)
        self._ids = itertools.count()
        self._seqs: dict[int, Sequence] = {}  # unfinished requests by id

    # ---- streaming API --------------------------------------------------------------------
    def add_request(self, request: GenerationRequest) -> int:
        """Validate and queue one request; returns its id. Raises ValueError, queueing nothing."""
        seq = self._make_sequence(request)
        self._enqueue(seq)
        return seq.seq_id

    def has_unfinished(self) -> bool:
        return self.scheduler.has_unfinished()

    def step(self) -> list[StepOutput]:
        """Run one model's batch; one StepOutput per sequence that got a token."""
        batch = self.scheduler.schedule()
        if batch is None:
            return []
        runner = self._by_id[batch.model_id].runner
        logits = runner.execute(_inputs(batch, self.blocks))
        tokens = self.sampler.sample(logits, [s.params for s in batch.seqs],
                                     [s.generator for s in batch.seqs])
        return self._postprocess(batch, tokens)

    def abort(self, request_id: int) -> None:
        """Drop an unfinished request and free its blocks (unknown ids are ignored)."""
        seq = self._seqs.pop(request_id, None)
        if seq is not None:
            self.scheduler.finish(seq)

    # ---- offline API ----------------------------------------------------------------------
    def generate(self, requests: Iterable[GenerationRequest]) -> list[GenerationOutput]:
        """Generate every request to completion; outputs in input order.

        All requests are validated before any is queued, so a bad one changes nothing.
        """
        seqs = [self._make_sequence(r) for r in requests]
        for seq in seqs:
            self._enqueue(seq)
        done: dict[int, GenerationOutput] = {}
        try:
            while len(done) < len(seqs):
                for out in self.step():
                    if out.finished and out.output is not None:
                        done[out.request_id] = out.output
                assert self.has_unfinished() or len(done) == len(seqs), "requests were lost"
        finally:
            for seq in seqs:
                self.abort(seq.seq_id)  # only unfinished ones remain (after an exception)
        self.check_integrity()
        return [done[s.seq_id] for s in seqs]

    def check_integrity(self) -> None:
        """The block manager is consistent and holds blocks only for running sequences."""
        self.blocks.check_integrity()
        running = self.scheduler.running_seq_ids()
        for model_id in self._by_id:
            held = set(self.blocks.seqs_of(model_id))
            assert held <= running, f"model {model_id}: blocks held by non-running seqs " \
                                    f"{sorted(held - running)}"
        if not running:
            assert self.blocks.used_blocks() == 0, f"{self.blocks.used_blocks()} blocks leaked"

    # ---- internals ------------------------------------------------------------------------
    def _make_sequence(self, request: GenerationRequest) -> Sequence:
        served = self.models.get(request.model)
        if served is None:
            raise ValueError(f"unknown model {request.model!r}; loaded models: "
                             f"{', '.join(self.models)}")
        prompt_ids = self._tokenize(served, request)
        self._check_fits(served, len(prompt_ids), request.params.max_tokens)
        # The detokenizer sees the prompt's last ids, so a first token's leading space survives.
        text = IncrementalText(served.loaded.tokenizer.new_detokenizer(prompt_ids),
                               request.params.stop)
        gen = None if request.params.seed is None else make_generator(request.params.seed)
        return Sequence(next(self._ids), served.name, served.model_id, prompt_ids,
                        request.params, text, gen)

    def _enqueue(self, seq: Sequence) -> None:
        self._seqs[seq.seq_id] = seq
        self.scheduler.add(seq)

    def _tokenize(self, served: ServedModel, request: GenerationRequest) -> list[int]:
        prompt, tok, vocab = request.prompt, served.loaded.tokenizer, served.loaded.arch.vocab_size
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt is empty; give at least one character or token id")
            if request.chat:
                prompt = tok.apply_chat_template([{"role": "user", "content": prompt}],
                                                 add_generation_prompt=True)
            # A chat template already wrote the special tokens (BOS) it wants.
            ids = (list(prompt) if not isinstance(prompt, str)
                   else tok.encode(prompt, add_special_tokens=not request.chat))
        else:
            if request.chat:
                raise ValueError("chat=True needs a text prompt, got token ids")
            ids = list(prompt)
            bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < vocab]
            if bad:
                raise ValueError(f"prompt token ids {bad[:5]} are not in [0, {vocab}) "
                                 f"(vocabulary of {served.name})")
        if not ids:
            raise ValueError("prompt is empty; give at least one character or token id")
        return ids

    def _check_fits(self, served: ServedModel, prompt_tokens: int, max_tokens: int) -> None:
        ctx = served.loaded.arch.max_context
        if prompt_tokens >= ctx:
            raise ValueError(f"prompt has {prompt_tokens} tokens but {served.name}'s context "
                             f"window is {ctx} tokens (at most {ctx - 1} leave room to generate)")
        # The last sampled token is never fed back, so it needs no KV slot.
        tokens = min(prompt_tokens + max_tokens - 1, ctx)
        need = self.blocks.blocks_needed(served.model_id, tokens)
        if need > self.blocks.num_blocks:
            raise ValueError(
                f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) needs {need} KV "
                f"blocks of {served.name}, but the pool has {self.blocks.num_blocks}; lower "
                f"max_tokens or give a larger kv_pool_bytes / num_blocks")

    def _postprocess(self, batch: Batch, tokens: list[int]) -> list[StepOutput]:
        outs = []
        for seq, token in zip(batch.seqs, tokens, strict=True):
            if not seq.output_ids:
                seq.first_token_s = _now()
            seq.output_ids.append(token)
            reason = self._finish_reason(seq, token)
            output = None
            if reason is not None:
                seq.finish_reason, seq.finish_s = reason, _now()
                seq.text.flush()
                self.scheduler.finish(seq)
                del self._seqs[seq.seq_id]
                output = seq.to_output()
            outs.append(StepOutput(seq.seq_id, seq.model, [token], seq.text.safe_text(),
                                   reason is not None, reason, output))
        return outs

    def _finish_reason(self, seq: Sequence, token: int) -> str | None:
        p = seq.params
        eos = self._by_id[seq.model_id].loaded.tokenizer.eos_token_ids
        if (token in eos and not p.ignore_eos) or token in p.stop_token_ids:
            return "stop"  # the stop token's text is not part of the output text
        if seq.text.add(token):
            return "stop"
        ctx = self._by_id[seq.model_id].loaded.arch.max_context
        if len(seq.output_ids) >= p.max_tokens or seq.num_tokens >= ctx:
            return "length"
        return None


def _inputs(batch: Batch, blocks: BlockManager) -> list[SeqInput]:
    if batch.phase is Phase.PREFILL:
        return [SeqInput(s.all_ids, 0, blocks.block_table(s.seq_id)) for s in batch.seqs]
    return [SeqInput([s.output_ids[-1]], s.num_tokens - 1, blocks.block_table(s.seq_id))
            for s in batch.seqs]


def _served_names(models: Seq[str] | Mapping[str, str]) -> dict[str, str]:
    if isinstance(models, str):
        raise ValueError(f"models must be a list of sources or a mapping, got the string "
                         f"{models!r} (did you mean [{models!r}]?)")
    if isinstance(models, Mapping):
        sources = dict(models)
    else:
        sources = {}
        for src in models:
            if src in sources:
                raise ValueError(f"model {src!r} is listed twice; give a mapping "
                                 f"{{served name: source}} to serve one source under two names")
            sources[src] = src
    if not sources:
        raise ValueError("models is empty; give at least one model source")
    return sources


def _num_blocks(num_blocks: int | None, kv_pool_bytes: int | None, block_numel: int,
                dtype: torch.dtype) -> int:
    if num_blocks is not None and kv_pool_bytes is not None:
        raise ValueError(f"give num_blocks ({num_blocks}) or kv_pool_bytes ({kv_pool_bytes}), "
                         f"not both")
    if num_blocks is not None:
        return num_blocks
    pool_bytes = DEFAULT_KV_POOL_BYTES if kv_pool_bytes is None else kv_pool_bytes
    block_bytes = block_numel * torch.empty((), dtype=dtype).element_size()
    if pool_bytes < block_bytes:
        raise ValueError(f"kv_pool_bytes {pool_bytes} is smaller than one block "
                         f"({block_bytes} bytes)")
    return pool_bytes // block_bytes


def _now() -> float:
    return time.perf_counter()
