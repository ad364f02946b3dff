"""Tokenizer: a `tokenizers.Tokenizer` plus the facts a serving engine needs about it.

The backend does the text <-> id work; this class adds what the backend does not know: the BOS
policy (Gemma3 must start with <bos>, SmolLM2 must not get one), the set of ids that end a
generation (Gemma3 also stops on <end_of_turn>), the chat template, and streaming detokenization.
Builders live in `muxserve.engine.loader` (GGUF metadata, HF folders, a byte-level tokenizer for
random-weight models); a Tokenizer saves to and loads from a folder so the loader can cache it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import tokenizers

from muxserve.engine.chat_templates import FALLBACK_TEMPLATES, render_chat_template

META_FILE = "muxserve_tokenizer.json"
BACKEND_FILE = "tokenizer.json"


@dataclass(frozen=True, eq=False)
class Tokenizer:
    """Text <-> token ids for one model.

    backend: the `tokenizers.Tokenizer`; it adds no special tokens itself (BOS is added here).
    add_bos_token: whether `encode(..., add_special_tokens=True)` prepends `bos_token_id`.
    eos_token_ids: every id that ends a generation.
    chat_template: the jinja template from the model file; None = the family's fallback
        (`chat_templates.FALLBACK_TEMPLATES[fallback_template]`).
    """

    backend: tokenizers.Tokenizer
    bos_token_id: int | None
    eos_token_id: int | None
    eos_token_ids: frozenset[int]
    add_bos_token: bool
    chat_template: str | None = None
    fallback_template: str = "plain"
    pad_token_id: int | None = None
    kind: str = ""  # "gpt2-bpe", "sentencepiece-bpe", "bytes", "hf" -- for messages and docs
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fallback_template not in FALLBACK_TEMPLATES:
            raise ValueError(f"unknown fallback template {self.fallback_template!r}; valid: "
                             f"{', '.join(FALLBACK_TEMPLATES)}")
        n = self.vocab_size
        ids = [self.bos_token_id, self.eos_token_id, self.pad_token_id, *self.eos_token_ids]
        bad = [i for i in ids if i is not None and not 0 <= i < n]
        if bad:
            raise ValueError(f"special token ids {bad} are outside the tokenizer's vocabulary "
                             f"of {n}")

    # ---- ids ------------------------------------------------------------------------------
    @property
    def vocab_size(self) -> int:
        """Number of ids the tokenizer can produce (the model's vocabulary may be larger)."""
        return int(self.backend.get_vocab_size(with_added_tokens=True))

    @property
    def bos_token(self) -> str:
        return self._token(self.bos_token_id)

    @property
    def eos_token(self) -> str:
        return self._token(self.eos_token_id)

    def _token(self, token_id: int | None) -> str:
        if token_id is None:
            return ""
        return self.backend.id_to_token(token_id) or ""

    def token_to_id(self, token: str) -> int | None:
        return self.backend.token_to_id(token)

    # ---- encode / decode ------------------------------------------------------------------
    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        """Token ids of `text`; with add_special_tokens, BOS first when the model wants one.

        Special-token strings in the text (e.g. "<start_of_turn>") are matched whole, so a
        rendered chat prompt should be encoded with add_special_tokens=False (its template
        already wrote the BOS) -- `encode_chat` does that.
        """
        if not isinstance(text, str):
            raise ValueError(f"encode expects a str, got {type(text).__name__}")
        ids: list[int] = self.backend.encode(text, add_special_tokens=False).ids
        if add_special_tokens and self.add_bos_token and self.bos_token_id is not None:
            ids = [self.bos_token_id, *ids]
        return ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self.backend.decode(list(ids), skip_special_tokens=skip_special_tokens))

    def new_detokenizer(self, prompt_ids: list[int] | None = None,
                        skip_special_tokens: bool = True) -> Detokenizer:
        """A streaming detokenizer; see `Detokenizer`."""
        return Detokenizer(self, list(prompt_ids or []), skip_special_tokens)

    # ---- chat -----------------------------------------------------------------------------
    @property
    def effective_chat_template(self) -> str:
        return self.chat_template or FALLBACK_TEMPLATES[self.fallback_template]

    def apply_chat_template(self, messages: list[dict[str, Any]],
                            add_generation_prompt: bool = True) -> str:
        """The prompt text for `messages` ([{"role": ..., "content": ...}, ...])."""
        return render_chat_template(self.effective_chat_template, messages,
                                    add_generation_prompt=add_generation_prompt,
                                    bos_token=self.bos_token, eos_token=self.eos_token)

    def encode_chat(self, messages: list[dict[str, Any]],
                    add_generation_prompt: bool = True) -> list[int]:
        """Token ids of the rendered chat prompt (the template writes any BOS itself)."""
        return self.encode(self.apply_chat_template(messages, add_generation_prompt),
                           add_special_tokens=False)

    # ---- persistence ----------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write tokenizer.json (the backend) and muxserve_tokenizer.json (the rest)."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.backend.save(str(folder / BACKEND_FILE))
        meta = dict(bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id,
                    eos_token_ids=sorted(self.eos_token_ids), add_bos_token=self.add_bos_token,
                    chat_template=self.chat_template, fallback_template=self.fallback_template,
                    pad_token_id=self.pad_token_id, kind=self.kind, extra=self.extra)
        tmp = folder / f".{META_FILE}.{os.getpid()}"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, folder / META_FILE)

    @classmethod
    def load(cls, folder: str | Path) -> Tokenizer:
        """Read what `save` wrote."""
        folder = Path(folder)
        meta = json.loads((folder / META_FILE).read_text())
        backend = tokenizers.Tokenizer.from_file(str(folder / BACKEND_FILE))
        meta["eos_token_ids"] = frozenset(meta["eos_token_ids"])
        return cls(backend=backend, **meta)


class Detokenizer:
    """Turns a stream of generated ids into text pieces, one `push` at a time.

    Decoding token by token breaks multi-byte characters (byte-fallback and byte-level BPE split
    them over several ids) and drops the space that some decoders attach at a token boundary.
    So, like vLLM and TGI, we decode a short window of recent ids, emit only the text beyond what
    the window without the newest ids decoded to, and hold back text that ends in U+FFFD (an
    incomplete character) until the next id completes it. `flush` returns anything held back.
    The concatenation of all pieces equals `decode(generated_ids)` for ids that decode to
    complete characters.
    """

    def __init__(self, tokenizer: Tokenizer, prompt_ids: list[int],
                 skip_special_tokens: bool = True) -> None:
        self.tokenizer = tokenizer
        self.skip_special_tokens = skip_special_tokens
        # keep a few prompt ids so the first generated token sees its left context
        self.ids: list[int] = prompt_ids[-6:]
        self.prefix_offset = 0
        self.read_offset = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=self.skip_special_tokens)

    def push(self, token_id: int) -> str:
        """Add one generated id; return the new text it completes (maybe "")."""
        self.ids.append(int(token_id))
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        if len(text) > len(prefix) and not text.endswith("\ufffd"):
            piece = text[len(prefix):]
            self.prefix_offset = self.read_offset
            self.read_offset = len(self.ids)
            return piece
        return ""

    def flush(self) -> str:
        """Text still held back (an incomplete character at the end of the stream)."""
        prefix = self._decode(self.ids[self.prefix_offset:self.read_offset])
        text = self._decode(self.ids[self.prefix_offset:])
        self.prefix_offset = self.read_offset = len(self.ids)
        return text[len(prefix):]
