"""Build `tokenizers` backends: from GGUF tokenizer metadata, and the byte-level test tokenizer.

A GGUF file has no tokenizer.json; it stores the vocabulary, token types, merges or scores and
the special ids under `tokenizer.ggml.*`. We rebuild the same tokenizer Hugging Face ships for
the model, following the rules transformers' GGUF converter uses, so ids match it exactly:

- `gpt2` (SmolLM2): byte-level BPE with the file's merges. Tokens spelled outside the byte
  alphabet are respelled into it. SmolLM2 (`pre` = "smollm") splits digits one by one first, as
  its own tokenizer.json and llama.cpp do.
- `llama` (SentencePiece; Gemma3): BPE with byte fallback. The file lists no merges, so they are
  rebuilt from the vocabulary: every split of a token into two tokens is a merge, ranked by the
  token's position in the file (Gemma's scores do not follow its merge order; the file order
  does). Tokens made only of spaces are stored with real spaces and are respelled with U+2581.
- Control tokens (type 3) become special added tokens (skipped by decode), user-defined tokens
  (type 4, e.g. Gemma's "\\n\\n") plain added tokens, so both are matched whole.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

CONTROL, USER_DEFINED = 3, 4
SPIECE_SPACE = "\u2581"

_LLAMA3_SPLIT = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's map from each byte to a printable character (the byte-level BPE alphabet)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("\xa1"), ord("\xac") + 1))
          + list(range(ord("\xae"), ord("\xff") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def build_gguf_backend(meta: dict[str, Any], architecture: str) -> Tokenizer:
    """The backend for tokenizer metadata `meta` (keys without the "tokenizer.ggml." prefix:
    model, pre, tokens, token_type, merges, scores)."""
    kind = meta.get("model")
    if kind == "gpt2":
        tok = _byte_level_bpe(meta)
    elif kind == "llama":
        tok = _sentencepiece_bpe(meta, gemma=architecture.startswith("gemma"))
    else:
        raise ValueError(f"unsupported GGUF tokenizer model {kind!r}; valid: gpt2, llama")
    _add_special_tokens(tok, meta, byte_level=kind == "gpt2")
    return tok


def _byte_level_bpe(meta: dict[str, Any]) -> Tokenizer:
    spelling = bytes_to_unicode()
    alphabet = set(spelling.values())
    vocab = {t if set(t) <= alphabet else "".join(spelling[b] for b in t.encode("utf-8")): i
             for i, t in enumerate(meta["tokens"])}
    merges = [tuple(m.split(" ")) for m in meta.get("merges", [])]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    pre = meta.get("pre", "")
    if pre == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level])
    elif pre in ("llama3", "llama-v3", "llama-bpe", "smaug-bpe"):
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(_LLAMA3_SPLIT), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    else:
        tok.pre_tokenizer = byte_level
    tok.decoder = decoders.ByteLevel()
    return tok


def _sentencepiece_bpe(meta: dict[str, Any], gemma: bool) -> Tokenizer:
    tokens = list(meta["tokens"])
    rank: dict[str, float]
    if gemma:
        tokens = [SPIECE_SPACE * len(t) if " " in t and not t.strip() else t for t in tokens]
        rank = {t: float(-i) for i, t in enumerate(tokens)}
    else:
        rank = dict(zip(tokens, (float(s) for s in meta["scores"]), strict=True))
    vocab = {t: i for i, t in enumerate(tokens)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=_merges_from_vocab(vocab, rank),
                               unk_token=_unk_token(meta, tokens), fuse_unk=True,
                               byte_fallback=True))
    if gemma:
        tok.normalizer = normalizers.Replace(" ", SPIECE_SPACE)
        tok.pre_tokenizer = pre_tokenizers.Split(" ", behavior="merged_with_previous")
    else:  # Llama-2-style SentencePiece: a space is prepended to the first word
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPIECE_SPACE,
                                                     prepend_scheme="first", split=False)
    steps = [decoders.Replace(SPIECE_SPACE, " "), decoders.ByteFallback(), decoders.Fuse()]
    if not gemma:  # undo the prepended space (Gemma prepends none)
        steps.append(decoders.Strip(" ", 1, 0))
    tok.decoder = decoders.Sequence(steps)
    return tok


def _unk_token(meta: dict[str, Any], tokens: list[str]) -> str | None:
    unk = meta.get("unknown_token_id")
    return tokens[int(unk)] if unk is not None else None


def _merges_from_vocab(vocab: dict[str, int], rank: dict[str, float]) -> list[tuple[str, str]]:
    """Every (left, right) split of a token into two tokens, best-ranked token first.

    Ties keep the order of the token (by rank) and then of the ids of its two halves, which is
    the order transformers' `generate_merges` produces.
    """
    merges: list[tuple[str, str, float]] = []
    for token, score in rank.items():
        local = [(token[:k], token[k:], score) for k in range(1, len(token))
                 if token[:k] in vocab and token[k:] in vocab]
        local.sort(key=lambda m: (vocab[m[0]], vocab[m[1]]))
        merges.extend(local)
    merges.sort(key=lambda m: (m[2], len(m[0]), len(m[1])), reverse=True)
    return [(left, right) for left, right, _ in merges]


def _add_special_tokens(tok: Tokenizer, meta: dict[str, Any], byte_level: bool) -> None:
    tokens, types = meta["tokens"], meta.get("token_type")
    if types is None:
        return
    types = np.asarray(types)
    vocab = tok.get_vocab()
    alphabet = set(bytes_to_unicode().values()) if byte_level else None
    # a "control" token spelled outside the byte alphabet is a llama.cpp mislabel in byte-level
    # files; adding it would grow the vocabulary past what the model has
    control = [AddedToken(tokens[i], normalized=False, special=True)
               for i in np.flatnonzero(types == CONTROL)
               if alphabet is None or set(tokens[i]) <= alphabet]
    user = [AddedToken(tokens[i], normalized=False, special=False)
            for i in np.flatnonzero(types == USER_DEFINED) if tokens[i] in vocab]
    if control:
        tok.add_special_tokens(control)
    if user:
        tok.add_tokens(user)


def byte_tokenizer_backend() -> Tokenizer:
    """Byte-level ids for random-weight models: id b (0..255) is byte b, 256 = "<bos>",
    257 = "<eos>". No merges, so every UTF-8 byte of the text is one token."""
    spelling = bytes_to_unicode()
    vocab = {spelling[b]: b for b in range(256)}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[], continuing_subword_prefix="",
                               end_of_word_suffix="", fuse_unk=False))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens([AddedToken("<bos>", normalized=False, special=True),
                            AddedToken("<eos>", normalized=False, special=True)])
    assert tok.token_to_id("<bos>") == 256 and tok.token_to_id("<eos>") == 257
    return tok
