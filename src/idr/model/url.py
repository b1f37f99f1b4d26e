"""Which URL values a node may send a browser to.

The proxy (``GET /{handle}``) and the GS1 resolver answer with a redirect to a URL someone
stored; a browser that follows ``javascript:``, ``vbscript:`` or ``data:`` runs what the
value's author wrote in the page's origin. Those values stay readable as data but are never
redirect targets. Browsers ignore leading spaces and C0 controls and drop tabs and newlines
anywhere in a URL before reading its scheme (WHATWG URL), so ``" java\\tscript:"`` is read
the same way here.
"""

from __future__ import annotations

import re

SCRIPT_SCHEMES = frozenset({"javascript", "vbscript", "data", "livescript", "mocha"})
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")


def _as_browser_reads(url: str) -> str:
    return (
        url.lstrip("".join(chr(c) for c in range(0x21))).replace("\t", "").replace("\n", "").replace("\r", "")
    )


def script_scheme(url: str) -> str | None:
    """The script-running scheme ``url`` would be followed as (lower case), or None."""
    m = _SCHEME.match(_as_browser_reads(url))
    if m is None:
        return None
    scheme = m.group(1).lower()
    return scheme if scheme in SCRIPT_SCHEMES else None


_CONTROL = re.compile("[\x00-\x1f\x7f]")


def has_control(text: str) -> bool:
    """A C0 control or DEL: never in a URL sent as a header (CR/LF would split the response).
    (A regular expression: every request path is checked, twice.)"""
    return _CONTROL.search(text) is not None
