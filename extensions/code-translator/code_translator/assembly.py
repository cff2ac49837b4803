"""Put translated chunks back in source order, both as a whole and as an append-only stream.

Chunks are translated in dependency order, but readers want the file top to bottom: the stream releases a chunk's
text only once every chunk above it is finished, so that the streamed text always equals the final output.
"""

from __future__ import annotations


def separator(previous: str) -> str:
    """What goes between a chunk and the next: enough newlines for one blank line, none if already there."""
    if not previous or previous.endswith("\n\n"):
        return ""
    return "\n" if previous.endswith("\n") else "\n\n"


class Assembly:
    """Texts of ``count`` chunks as they grow; ``output()`` is the whole so far, ``take()`` the new stream text."""

    def __init__(self, count: int) -> None:
        self.texts: list[str | None] = [None] * count
        self.finished = [False] * count
        self._next = 0  # the first chunk (source order) not yet fully streamed
        self._sent = 0  # characters of that chunk already streamed
        self._sent_separator = False

    def set(self, index: int, text: str, finished: bool = False) -> None:
        self.texts[index] = text
        self.finished[index] = finished

    def output(self) -> str:
        out = ""
        previous: str | None = None
        for text in self.texts:
            if text is None:
                continue
            if previous is not None:
                out += separator(previous)
            out += text
            previous = text
        return out

    def take(self) -> str:
        """Text that can be appended to the stream now, in source order."""
        out = ""
        while self._next < len(self.texts):
            text = self.texts[self._next]
            if text is None:
                break
            if self._next > 0 and not self._sent_separator and (text or self.finished[self._next]):
                out += separator(self.texts[self._next - 1] or "")
                self._sent_separator = True
            out += text[self._sent:]
            self._sent = len(text)
            if not self.finished[self._next]:
                break
            self._next += 1
            self._sent = 0
            self._sent_separator = False
        return out
