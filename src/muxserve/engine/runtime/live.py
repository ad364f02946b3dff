"""Unit-side state of one request: its tokens, streamed text and stop rules (as MultiModelLLM's
``_finish_reason``), and the TokenEvents it emits."""

from __future__ import annotations

from muxserve.config.models import ModelArch
from muxserve.engine.protocol import GenerateRequest, TokenEvent
from muxserve.engine.stop import IncrementalText


class LiveRequest:
    """rid: the scheduler's int id. max_output: tokens it may generate (max_tokens, capped by
    the model's context window: generation stops when prompt + output reach it)."""

    def __init__(self, rid: int, req: GenerateRequest, model_id: int, text: IncrementalText,
                 eos_ids: frozenset[int], max_output: int) -> None:
        self.rid, self.req, self.model_id = rid, req, model_id
        self.prompt = list(req.prompt_token_ids)
        self.output_ids: list[int] = []
        self.text = text
        self.eos_ids = eos_ids
        self.max_output = max_output
        self._sent_chars = 0

    def add_token(self, token: int) -> str | None:
        """Record a sampled token; returns "stop" / "length" when the request ends with it."""
        self.output_ids.append(token)
        p = self.req.params
        if (token in self.eos_ids and not p.ignore_eos) or token in p.stop_token_ids:
            return "stop"  # the stop token's text is not part of the output
        if self.text.add(token):
            return "stop"
        if len(self.output_ids) >= self.max_output:
            return "length"
        return None

    def event(self, new_ids: tuple[int, ...], finish_reason: str | None) -> TokenEvent:
        """The event for the tokens since the last one; at the end the held-back text too."""
        if finish_reason is not None:
            self.text.flush()
            safe = self.text.text
        else:
            safe = self.text.safe_text()
        delta, self._sent_chars = safe[self._sent_chars:], max(self._sent_chars, len(safe))
        return TokenEvent(self.req.req_id, new_ids, delta, finish_reason,
                          prompt_tokens=len(self.prompt), completion_tokens=len(self.output_ids))

    def fail(self, reason: str, error: str | None = None) -> TokenEvent:
        return TokenEvent(self.req.req_id, (), "", reason, error,
                          prompt_tokens=len(self.prompt), completion_tokens=len(self.output_ids))


def reject(req: GenerateRequest, error: str) -> TokenEvent:
    """The one event of a request the unit refused (bad model, prompt, duplicate id)."""
    return TokenEvent(req.req_id, (), "", "error", error, prompt_tokens=len(req.prompt_token_ids))


def check_request(req: GenerateRequest, arch: ModelArch | None, served: list[str],
                  duplicate: bool) -> str | None:
    """Why the unit must refuse req (None: it may queue it). arch: its model's, None if unknown."""
    if duplicate:
        return f"request id {req.req_id!r} is already running in this unit"
    if arch is None:
        return f"unknown model {req.model!r}; this unit serves {', '.join(served)}"
    ids, vocab, ctx = req.prompt_token_ids, arch.vocab_size, arch.max_context
    if not ids:
        return "prompt is empty; give at least one token id"
    bad = [t for t in ids if not isinstance(t, int) or not 0 <= t < vocab]
    if bad:
        return f"prompt token ids {bad[:5]} are not in [0, {vocab}) (vocabulary of {req.model})"
    if len(ids) >= ctx:
        return (f"prompt has {len(ids)} tokens but {req.model}'s context window is {ctx} tokens "
                f"(at most {ctx - 1} leave room to generate)")
    return None
