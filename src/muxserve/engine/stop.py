"""Stop strings over streamed text, for one generated sequence.

Text arrives piece by piece from a streaming detokenizer (``muxserve.engine.tokenizer.
Detokenizer``: it decodes a short window of recent ids and holds back incomplete characters), so
a stop string may be split across tokens; only the tail that the new piece can complete is
searched, which keeps the check O(piece + longest stop string) per token.
"""

from __future__ import annotations

from typing import Protocol


class PieceSource(Protocol):
    """What IncrementalText needs from a streaming detokenizer."""

    def push(self, token_id: int) -> str: ...  # new text this id completes (maybe "")

    def flush(self) -> str: ...  # text held back at the end of the stream


class IncrementalText:
    """Generated text of one sequence, built token by token, cut before the first stop string.

    ``text`` is final once ``add`` returned True or ``flush`` was called.
    """

    def __init__(self, pieces: PieceSource, stop: tuple[str, ...] = ()) -> None:
        self._pieces = pieces
        self._stop = stop
        self._max_stop_chars = max((len(s) for s in stop), default=0)
        self.text = ""
        self.stopped = False  # a stop string was found (text is cut before it)

    def add(self, token_id: int) -> bool:
        """Append one token; True when the text now contains a stop string (text is cut)."""
        assert not self.stopped, "add after a stop string was found"
        return self._append(self._pieces.push(token_id))

    def flush(self) -> None:
        """Emit text held back for an unfinished character (call when the sequence ends)."""
        if not self.stopped:
            self._append(self._pieces.flush())

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

    def _append(self, piece: str) -> bool:
        if not piece:
            return False
        old_len = len(self.text)
        self.text += piece
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
