"""The upstream's key, kept out of what an upstream sends back.

An upstream may echo the request, or be a proxy that does, in an error or inside an answer: the key
as sent, in another case, URL- or base64-encoded (alone, after "Bearer ", or as basic auth), or a
long piece of it. Every such form is replaced by "[redacted]", in error messages and in a stream's text
(there holding back enough of the text's end that a form split between two events is caught whole).
"""
from __future__ import annotations

import base64
import re
from urllib.parse import quote

REDACTED = "[redacted]"
KEYISH = r"[A-Za-z0-9_\-+/=%]"  # characters of a key and its encodings: the rest of a cut-off form goes too
PIECE = 12  # a run this long of the key is a leak (a masked echo such as "sk-...cdef" is not)


def forms(key: str) -> set[str]:
    encoded = {base64.b64encode(s.encode()).decode().rstrip("=") for s in (key, f"Bearer {key}", f":{key}", f"{key}:")}
    pieces = {key[i:i + PIECE] for i in range(max(1, len(key) - PIECE + 1))}
    return {quote(key, safe=""), *encoded, *pieces}


class Redactor:
    def __init__(self, key: str | None):
        found = sorted(forms(key), key=len, reverse=True) if key else []
        # A form, and whatever is left of the key's characters around it: no piece of it is let through.
        self.pattern = re.compile("|".join(f"{KEYISH}*{re.escape(f)}{KEYISH}*" for f in found), re.I) if found else None
        self.hold = max((len(f) for f in found), default=1) - 1
        self.tail = ""

    def text(self, text: str) -> str:
        """`text` without the key (a whole message)."""
        return self.pattern.sub(REDACTED, text) if self.pattern else text

    def push(self, piece: str) -> str:
        """A stream's next piece: what may be shown of the text so far, the end held back."""
        if not self.pattern:
            return piece
        text = self.tail + piece
        cut = max(0, len(text) - self.hold)  # a form not yet whole begins after this
        for found in self.pattern.finditer(text):
            if found.start() < cut < found.end() or found.end() == len(text):  # never split one, nor end one early
                cut = found.end() if found.end() < len(text) else min(cut, found.start())
        self.tail = text[cut:]
        return self.text(text[:cut])

    def flush(self) -> str:
        tail, self.tail = self.tail, ""
        return self.text(tail)
