"""Incremental detokenization and stop strings for one generated sequence.

Decoding the whole output after every token costs O(n^2); instead a short window of recent ids
is decoded and only the new characters are appended (the vLLM approach). The window keeps one
earlier token so that tokenizers which drop a leading space at the start of a decode
(SentencePiece) still produce the space between tokens. A token that ends inside a multi-byte
character decodes to U+FFFD; its text is held back until the character completes.
"""

from __future__ import annotations

from collections.abc import Callable


class IncrementalText:
    """Generated text of one sequence, built token by token, cut before the first stop string.

    ``decode(ids) -> str`` must skip special tokens. ``text`` is final once ``add`` returned True
    or ``flush`` was called.
    """

    def __init__(self, decode: Callable[[list[int]], str], stop: tuple[str, ...] = ()) -> None:
        self._decode = decode
        self._stop = stop
        self._max_stop_chars = max((len(s) for s in stop), default=0)
        self._ids: list[int] = []
        self._prefix = 0  # ids[_prefix:_read] were decoded last time (context for the next)
        self._read = 0  # ids before _read are in text
        self.text = ""
        self.stopped = False  # a stop string was found (text is cut before it)

    def add(self, token_id: int) -> bool:
        """Append one token; True when the text now contains a stop string (text is cut)."""
        assert not self.stopped, "add after a stop string was found"
        self._ids.append(token_id)
        return self._advance(final=False)

    def flush(self) -> None:
        """Emit text held back for an unfinished character (call when the sequence ends)."""
        if not self.stopped and self._read < len(self._ids):
            self._advance(final=True)

    def safe_text(self) -> str:
        """Text that can be streamed now: without a tail that may still become a stop string."""
        if self.stopped or not self._stop:
            return self.text
        hold = 0
        for s in self._stop:
            for n in range(min(len(s) - 1, len(self.text)), hold, -1):
                if self.text.endswith(s[:n]):
                    hold = n
                    break
        return self.text[:len(self.text) - hold]

    def _advance(self, final: bool) -> bool:
        before = self._decode(self._ids[self._prefix:self._read])
        after = self._decode(self._ids[self._prefix:])
        if not final and (len(after) <= len(before) or after.endswith("\ufffd")):
            return False  # nothing new yet, or a character is still incomplete
        old_len = len(self.text)
        self.text += after[len(before):]
        self._prefix, self._read = self._read, len(self._ids)
        return self._find_stop(old_len)

    def _find_stop(self, old_len: int) -> bool:
        if not self._stop:
            return False
        # A stop string that ends in the new characters may start up to its length - 1 earlier,
        # which is how one split across tokens is found.
        start = max(0, old_len - self._max_stop_chars + 1)
        hits = [i for i in (self.text.find(s, start) for s in self._stop) if i >= 0]
        if not hits:
            return False
        self.text = self.text[:min(hits)]
        self.stopped = True
        return True
