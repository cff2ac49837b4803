"""Remove Markdown code fences that models add despite being asked not to, without delaying the stream much.

Only a fence on the reply's first line and a fence at its end are removed; fences in the middle (a Markdown
explanation that quotes code) are kept. A reply without fences passes through unchanged, byte for byte.
"""

from __future__ import annotations

import re

FENCE = "```"


def _could_be_fence(line: str) -> bool:
    """The line is (or, still incomplete, may become) a fence line."""
    stripped = line.strip()
    return stripped.startswith(FENCE) or (stripped != "" and FENCE.startswith(stripped))


class FenceStripper:
    """Feed it the reply's pieces as they arrive; it returns what is safe to show now. Call ``finish()`` at the end.

    It holds back the first line until it knows whether it is an opening fence, and the trailing lines while they
    are blank or look like a closing fence.
    """

    def __init__(self) -> None:
        self._pending = ""
        self._opened = False  # the first-line decision is made

    def feed(self, text: str) -> str:
        self._pending += text
        if not self._opened:
            head = self._pending.lstrip()
            if not head or (FENCE.startswith(head[:3]) and len(head) < 3):
                return ""
            if head.startswith(FENCE):
                newline = self._pending.find("\n")
                if newline < 0:
                    return ""
                self._pending = self._pending[newline + 1:]
            self._opened = True
        return self._release()

    def _release(self) -> str:
        lines = self._pending.split("\n")
        keep_from = len(lines)
        while keep_from > 0 and (lines[keep_from - 1].strip() == "" or _could_be_fence(lines[keep_from - 1])):
            keep_from -= 1
        if keep_from == len(lines):  # the last line has content that cannot become a fence: all is safe
            out, self._pending = self._pending, ""
            return out
        if keep_from == 0:
            return ""
        out = "\n".join(lines[:keep_from]) + "\n"
        self._pending = "\n".join(lines[keep_from:])
        return out

    def finish(self) -> str:
        """The rest, minus a closing fence and anything after it."""
        rest, self._pending = self._pending, ""
        if not self._opened and rest.lstrip().startswith(FENCE):
            return ""
        lines = rest.split("\n")
        for n, line in enumerate(lines):
            if line.strip().startswith(FENCE):
                return "\n".join(lines[:n]) + ("\n" if n else "")
        return rest


def strip_fences(text: str) -> str:
    """The same as streaming ``text`` through a :class:`FenceStripper` in one piece."""
    stripper = FenceStripper()
    return stripper.feed(text) + stripper.finish()


_BLOCK = re.compile(r"^```[^\n`]*\n(.*?)^```\s*$", re.DOTALL | re.MULTILINE)


def extract_code(text: str) -> str:
    """The program in a reply: the longest fenced block if there is one (prose around it dropped), else the text."""
    blocks = _BLOCK.findall(text)
    if blocks:
        return max(blocks, key=len)
    return strip_fences(text)
