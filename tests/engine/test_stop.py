"""IncrementalText: token-by-token text equals a full decode; stop strings are cut correctly."""

from __future__ import annotations

import pytest

from muxserve.engine.stop import IncrementalText
from muxserve.engine.tokenizer import Detokenizer

# A byte-level vocabulary like BPE tokenizers have: ids map to byte strings, and one UTF-8
# character may be split across two tokens (id 7 + id 8 = "é").
VOCAB = {0: b"Hello", 1: b" wor", 2: b"ld", 3: b"!", 4: b" ST", 5: b"OP", 6: b" x",
         7: "é".encode()[:1], 8: "é".encode()[1:], 9: b"\n", 10: b"", 11: b"STOP"}


def byte_decode(ids: list[int]) -> str:
    return b"".join(VOCAB[i] for i in ids).decode("utf-8", errors="replace")


def sp_decode(ids: list[int]) -> str:
    """SentencePiece-style: the leading space of the first piece is dropped."""
    return byte_decode(ids).removeprefix(" ")


class _Decoder:
    """The one method Detokenizer calls on a tokenizer."""

    def __init__(self, decode) -> None:  # type: ignore[no-untyped-def]
        self._decode = decode

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return str(self._decode(ids))


def _text(decode, stop: tuple[str, ...] = ()) -> IncrementalText:  # type: ignore[no-untyped-def]
    return IncrementalText(Detokenizer(_Decoder(decode), []), stop)  # type: ignore[arg-type]


def _feed(text: IncrementalText, ids: list[int]) -> int:
    """Feed ids until a stop; returns how many were fed."""
    for n, t in enumerate(ids, 1):
        if text.add(t):
            return n
    text.flush()
    return len(ids)


@pytest.mark.parametrize("decode", [byte_decode, sp_decode])
def test_incremental_text_equals_full_decode(decode) -> None:  # type: ignore[no-untyped-def]
    ids = [0, 1, 2, 3, 6, 7, 8, 9, 10, 1, 2]
    text = _text(decode)
    for i, t in enumerate(ids):
        text.add(t)
        assert "\ufffd" not in text.text  # half of "é" is held back
        assert decode(ids[:i + 1]).startswith(text.text)
    text.flush()
    assert text.text == decode(ids)


def test_stop_string_inside_one_token() -> None:
    text = _text(byte_decode, ("ld!",))
    assert _feed(text, [0, 1, 2, 3, 6]) == 4
    assert text.stopped and text.text == "Hello wor"


def test_stop_string_split_across_tokens() -> None:
    # " STOP" arrives as " ST" + "OP"; the text must end before the space.
    text = _text(byte_decode, (" STOP",))
    assert _feed(text, [0, 4, 5, 6]) == 3
    assert text.text == "Hello"


def test_earliest_of_several_stop_strings_wins() -> None:
    text = _text(byte_decode, ("STOP", "o w"))
    assert _feed(text, [0, 1, 2]) == 2
    assert text.text == "Hell"


def test_stop_string_across_a_split_character() -> None:
    text = _text(byte_decode, ("é\n",))
    assert _feed(text, [0, 6, 7, 8, 9, 3]) == 5
    assert text.text == "Hello x"


def test_no_stop_means_full_text() -> None:
    text = _text(byte_decode, ("zzz",))
    assert _feed(text, [0, 1, 2, 3]) == 4
    assert not text.stopped and text.text == "Hello world!"


def test_safe_text_holds_back_a_possible_stop_prefix() -> None:
    text = _text(byte_decode, (" STOP",))
    text.add(0)
    text.add(4)  # "Hello ST" might become "Hello STOP"
    assert text.text == "Hello ST" and text.safe_text() == "Hello"
    text.add(6)  # "Hello ST x" cannot any more
    assert text.safe_text() == "Hello ST x"


def test_flush_emits_an_unfinished_character() -> None:
    text = _text(byte_decode)
    text.add(0)
    text.add(7)
    assert text.text == "Hello"
    text.flush()
    assert text.text == "Hello\ufffd"
