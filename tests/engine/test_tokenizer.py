"""Tokenizer: encode/decode, streaming detokenization, chat templates, persistence; and (slow)
parity with transformers' own tokenizers built from the same GGUF files."""

from __future__ import annotations

from pathlib import Path

import pytest

from muxserve.engine.chat_templates import GEMMA_FALLBACK_TEMPLATE, render_chat_template
from muxserve.engine.loader import load_model
from muxserve.engine.loader.cache import cache_root
from muxserve.engine.loader.random_model import byte_tokenizer
from muxserve.engine.loader.sources import resolve_source
from muxserve.engine.tokenizer import Tokenizer

TEXTS = [
    "Hello world",
    "",
    "  leading spaces, inner   runs,\ttabs\t\tand\n\n\nnewlines  ",
    "digits 0123456789, pi=3.14159 and 1,000,000.",
    "unicode: héllo naïve café 日本語 Ελληνικά — “quotes” 🤖🚀",
    "code:\n    def f(x):\n        return x ** 2\n",
]


def stream(tok: Tokenizer, ids: list[int]) -> list[str]:
    d = tok.new_detokenizer()
    pieces = [d.push(i) for i in ids]
    return [*pieces, d.flush()]


def test_byte_detokenizer_holds_back_partial_characters() -> None:
    tok = byte_tokenizer()
    text = "hé 日本 🤖!"
    pieces = stream(tok, tok.encode(text, add_special_tokens=False))
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # 'h' is out at once; the two bytes of 'é' give "" then "é"; the emoji's four bytes wait
    assert pieces[:3] == ["h", "", "é"]
    assert pieces[-6:] == ["", "", "", "🤖", "!", ""]


def test_save_load_round_trip(tmp_path: Path) -> None:
    tok = byte_tokenizer()
    tok.save(tmp_path)
    back = Tokenizer.load(tmp_path)
    assert (back.bos_token_id, back.eos_token_id, back.eos_token_ids, back.add_bos_token,
            back.chat_template, back.fallback_template, back.kind) == \
        (tok.bos_token_id, tok.eos_token_id, tok.eos_token_ids, tok.add_bos_token,
         tok.chat_template, tok.fallback_template, tok.kind)
    assert back.encode("héllo") == tok.encode("héllo")


def test_gemma_fallback_template_text() -> None:
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": " Hi! "},
            {"role": "assistant", "content": "Hello."}, {"role": "user", "content": "Bye"}]
    text = render_chat_template(GEMMA_FALLBACK_TEMPLATE, msgs, bos_token="<bos>")
    assert text == ("<bos><start_of_turn>user\nBe brief.<end_of_turn>\n"
                    "<start_of_turn>user\nHi!<end_of_turn>\n"
                    "<start_of_turn>model\nHello.<end_of_turn>\n"
                    "<start_of_turn>user\nBye<end_of_turn>\n<start_of_turn>model\n")
    assert not render_chat_template(GEMMA_FALLBACK_TEMPLATE, msgs[:1], False,
                                    bos_token="<bos>").endswith("model\n")


def test_chat_template_bad_input() -> None:
    with pytest.raises(ValueError, match="message 0"):
        render_chat_template(GEMMA_FALLBACK_TEMPLATE, [{"role": "user"}])
    with pytest.raises(ValueError, match="no system"):
        render_chat_template("{{ raise_exception('no system') }}", [])
    with pytest.raises(ValueError, match="encode expects a str"):
        byte_tokenizer().encode(None)  # type: ignore[arg-type]


# ---- the real models (slow) ----------------------------------------------------------------

def _gguf_path(name: str) -> Path:
    path = resolve_source(name, cache_root()).path
    assert path is not None
    return path


@pytest.fixture(scope="module", params=["smollm2-135m", "gemma3-270m"])
def pair(request: pytest.FixtureRequest) -> tuple[str, Tokenizer, object]:
    """(name, our tokenizer, transformers' tokenizer from the same GGUF)."""
    from transformers import AutoTokenizer

    name = str(request.param)
    path = _gguf_path(name)
    ours = load_model(name).tokenizer
    theirs = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    return name, ours, theirs


@pytest.mark.slow
def test_ids_and_text_match_transformers(pair: tuple[str, Tokenizer, object]) -> None:
    name, ours, theirs = pair
    special = ("<|im_start|>user\nhi<|im_end|>" if name.startswith("smollm")
               else "<start_of_turn>user\nhi<end_of_turn>")
    for text in [*TEXTS, special]:
        ids = ours.encode(text)
        assert ids == theirs(text)["input_ids"], text
        assert ours.decode(ids) == theirs.decode(ids, skip_special_tokens=True), text
        assert ours.decode(ids, skip_special_tokens=False) == theirs.decode(ids), text
        if text != special:
            assert ours.decode(ids) == text
        assert "".join(stream(ours, ids)) == ours.decode(ids), text
    assert ours.vocab_size == len(theirs)


@pytest.mark.slow
def test_model_specific_facts(pair: tuple[str, Tokenizer, object]) -> None:
    name, ours, _ = pair
    msgs = [{"role": "user", "content": "What is 2+2?"}]
    if name == "gemma3-270m":
        assert ours.encode("hi")[0] == ours.bos_token_id == 2
        assert ours.eos_token_ids == {1, 106}  # <eos>, <end_of_turn>
        assert ours.chat_template is None  # base model: the documented fallback applies
        ids = ours.encode_chat(msgs)
        assert ids[:2] == [2, 105] and ids.count(2) == 1
    else:
        assert ours.encode("hi") == ours.encode("hi", add_special_tokens=False)  # no BOS
        assert ours.eos_token_ids == {0, 2}  # <|endoftext|>, <|im_end|>
        assert ours.chat_template and ours.encode_chat(msgs)[0] == 1  # <|im_start|>


@pytest.mark.slow
def test_smollm2_chat_template_matches_transformers(pair: tuple[str, Tokenizer, object]
                                                    ) -> None:
    name, ours, theirs = pair
    if name != "smollm2-135m":
        pytest.skip("Gemma3 270M has no template in its file")
    convs = [
        [{"role": "user", "content": "Hi there"}],
        [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Hi"}],
        [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
         {"role": "user", "content": "  and 2+2? \n"}],
    ]
    for msgs in convs:
        for gen in (True, False):
            want = theirs.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
            assert ours.apply_chat_template(msgs, add_generation_prompt=gen) == want
            assert ours.encode_chat(msgs, gen) == theirs(want, add_special_tokens=False)[
                "input_ids"]


@pytest.mark.slow
def test_smollm2_digits_after_a_space_run() -> None:
    """The one known difference from transformers' GGUF tokenizer: SmolLM2 splits digits
    before the byte-level regex (its own tokenizer.json and llama.cpp's "smollm" pre-tokenizer
    do), so "  1" is "ĠĠ", "1" for us and "Ġ", "Ġ", "1"-style pieces for transformers."""
    tok = load_model("smollm2-135m").tokenizer
    ids = tok.encode("x  1")
    assert [tok.backend.id_to_token(i) for i in ids] == ["x", "ĠĠ", "1"]


def test_special_ids_must_be_in_vocabulary() -> None:
    tok = byte_tokenizer()
    with pytest.raises(ValueError, match="300"):
        Tokenizer(backend=tok.backend, bos_token_id=300, eos_token_id=257,
                  eos_token_ids=frozenset({257}), add_bos_token=True)
