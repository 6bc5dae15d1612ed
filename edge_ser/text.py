"""Text from untrusted sources (manifest strings, file names, labels) made safe for a terminal."""
from __future__ import annotations

import re

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean(text: object, limit: int = 500) -> str:
    """``text`` as one printable line: control characters (ANSI escapes, newlines, bidi overrides) shown as
    ``\\xNN`` escapes, cut at ``limit`` characters. Use with rich's ``Text`` (no markup) or plain prints."""
    s = _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    return s if len(s) <= limit else s[:limit] + "…"


def plain(text: object, limit: int = 500) -> str:
    """``clean`` text for a matplotlib figure: ``$`` would otherwise start mathtext (and can fail to parse)."""
    return clean(text, limit).replace("$", r"\$")
