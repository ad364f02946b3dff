"""Turn a validated request body into token-id prompts and SamplingParams, or a 4xx.

Everything the engine would reject for the request's own sake is checked here, before
admission, so that bad input never costs a queue slot and never becomes a 5xx.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from muxserve.engine.tokenizer import Tokenizer
from muxserve.server.backend import UnitBackend, max_context
from muxserve.server.config import ServerOptions
from muxserve.server.errors import APIError
from muxserve.server.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from muxserve.types import SamplingParams

# Request fields this server does not implement: only their defaults are accepted
# (best_of 1 and null/false/0 mean "off").
UNSUPPORTED = ("presence_penalty", "frequency_penalty", "logprobs", "top_logprobs", "echo",
               "best_of", "suffix")


@dataclass(frozen=True)
class Prepared:
    """What to run: one prompt per entry of `prompts`, each sampled `n` times."""

    model: str
    prompts: tuple[tuple[int, ...], ...]
    params: tuple[SamplingParams, ...]  # one per prompt (max_tokens may differ)
    n: int

    @property
    def num_choices(self) -> int:
        return len(self.prompts) * self.n


def check_model(backend: UnitBackend, model: str) -> None:
    served = backend.models()
    if model not in served:
        raise APIError(404, f"The model {model!r} does not exist; served models: "
                            f"{', '.join(served)}", param="model", code="model_not_found")


def prepare_completion(body: CompletionRequest, backend: UnitBackend,
                       opts: ServerOptions) -> Prepared:
    check_model(backend, body.model)
    tok = backend.tokenizer(body.model)
    prompts = [_encode_prompt(p, tok) for p in _prompt_list(body.prompt)]
    return _finish(body, backend, opts, prompts, body.max_tokens, min(16, opts.default_max_tokens))


def prepare_chat(body: ChatCompletionRequest, backend: UnitBackend,
                 opts: ServerOptions) -> Prepared:
    check_model(backend, body.model)
    tok = backend.tokenizer(body.model)
    messages = [{"role": m.role if m.role != "developer" else "system",
                 "content": _content(m.content)} for m in body.messages]
    try:
        ids = tok.encode_chat(messages, add_generation_prompt=True)
    except ValueError as e:
        raise APIError(400, f"messages: {e}", param="messages") from e
    if not ids:
        raise APIError(400, "messages render to an empty prompt", param="messages")
    max_tokens = body.max_completion_tokens or body.max_tokens
    return _finish(body, backend, opts, [tuple(ids)], max_tokens, opts.default_max_tokens)


def _finish(body: SamplingFields, backend: UnitBackend, opts: ServerOptions,
            prompts: list[tuple[int, ...]], max_tokens: int | None,
            default_max_tokens: int) -> Prepared:
    if len(prompts) * body.n > opts.max_n:
        raise APIError(400, f"{len(prompts)} prompt(s) x n={body.n} is {len(prompts) * body.n} "
                            f"choices; this server allows at most {opts.max_n} per request",
                       param="n")
    for name in UNSUPPORTED:
        value = getattr(body, name, None)
        if _is_set(name, value):
            raise APIError(400, f"{name}={value!r} is not supported by this server",
                           param=name, code="unsupported")
    ctx = max_context(backend, body.model)
    params = tuple(_params(body, len(p), ctx, max_tokens, default_max_tokens) for p in prompts)
    return Prepared(body.model, tuple(prompts), params, body.n)


def _params(body: SamplingFields, prompt_len: int, ctx: int | None, max_tokens: int | None,
            default_max_tokens: int) -> SamplingParams:
    if ctx is not None:
        if prompt_len >= ctx:
            raise APIError(400, f"This model's maximum context length is {ctx} tokens, but the "
                                f"prompt has {prompt_len} tokens", param="prompt",
                           code="context_length_exceeded")
        if max_tokens is not None and prompt_len + max_tokens > ctx:
            raise APIError(400, f"This model's maximum context length is {ctx} tokens; the "
                                f"prompt ({prompt_len}) plus max_tokens ({max_tokens}) needs "
                                f"{prompt_len + max_tokens}", param="max_tokens",
                           code="context_length_exceeded")
        default_max_tokens = min(default_max_tokens, ctx - prompt_len)
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    try:
        return SamplingParams(max_tokens=max_tokens or default_max_tokens,
                              temperature=body.temperature, top_p=body.top_p,
                              top_k=max(body.top_k, 0), seed=body.seed, stop=stop,
                              ignore_eos=body.ignore_eos)
    except ValueError as e:
        raise APIError(400, str(e), code="invalid_value") from e


def _is_set(name: str, value: Any) -> bool:
    if value is None or value is False:
        return False
    if name == "best_of":
        return bool(value != 1)
    if name == "suffix":
        return value != ""
    return bool(value != 0)


def _prompt_list(prompt: Any) -> list[str | list[int]]:
    if isinstance(prompt, str):
        return [prompt]
    if prompt and isinstance(prompt[0], int):
        return [prompt]
    return list(prompt)


def _encode_prompt(prompt: str | list[int], tok: Tokenizer) -> tuple[int, ...]:
    if isinstance(prompt, str):
        ids = tok.encode(prompt, add_special_tokens=True) if prompt else []
        if not ids:
            raise APIError(400, "prompt is empty; give at least one character or token id",
                           param="prompt")
        return tuple(ids)
    vocab = tok.vocab_size
    bad = [t for t in prompt if not 0 <= t < vocab]
    if bad:
        raise APIError(400, f"prompt token ids {bad[:5]} are not in [0, {vocab})",
                       param="prompt")
    return tuple(prompt)


def _content(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(part.text for part in content)
