"""Reverse lookup: which handles hold a value of type T whose data matches a pattern.

What Handle.Net's reverse-lookup service (``/hrls/handles?URL=…``) answers, kept as an index
inside the store so every write — a commit, an import batch, a replicated entry, a mirror's
re-copy — updates it in the same transaction as the record (engines call ``index_entries``
from their write paths; nothing outside the store maintains it).

What is indexed: per record, each value that anyone may read (``public_read``; never an
HS_SECKEY), whose data is UTF-8 text without control characters, at most ``MAX_DATA`` bytes,
of a handle outside idr's reserved internal prefixes (``0.HOMED``, ``0.PREFIXAPP``, … — only
``0.NA`` of the ``0.`` prefixes is a real namespace). The entry is ``(TYPE, data, key)``:
the type upper-cased (types match case-insensitively, as in resolution), the data as is
(matching is case-sensitive, the same on both engines).

Patterns: ``*`` matches any run of characters (also none); every other character stands for
itself (no ``?``, no escapes, as the reference service). A pattern is one of:

* exact (no ``*``): one B-tree probe, O(log n + k);
* literal prefix then ``*`` (``https://example.org/*``): one B-tree range, O(log n + m);
* anything else: with a literal prefix, that range filtered; without one, the substring
  index (trigrams: SQLite FTS5, PostgreSQL pg_trgm) when the pattern has a literal run of
  three characters or more (``*/objects/17*``) — cost grows with the entries sharing its
  trigrams, not with n; patterns with no such run (``*``, ``*a*``) read every entry of the
  type, O(n_type).

k, m: entries matched. A query of several terms reads only its most selective term's matches
(``by_selectivity``: exact, then the longest literal prefix, then the longest literal run)
and checks each of those handles against the other terms through the key index, O(r log n)
per term. Results are ordered by handle key (stable pages) at O(r log r) for r matches of
the first term, paged by ``limit`` and ``offset`` as the reference service's ``limit`` and
``page``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from idr.model.value import HandleRecord

MAX_DATA = 1024  # bytes of UTF-8: longer values are not searchable (B-tree entry size)
MAX_TYPE = 128
MAX_KEY = 1024
DEFAULT_LIMIT = 1000  # the reference service's default
MAX_LIMIT = 10000  # and its ceiling
MAX_TERMS = 8
MAX_PATTERN = MAX_DATA
TRIGRAM = 3  # a literal run this long lets the substring index narrow the search
WILDCARD = "*"

# Index modes, chosen per store and kept in its meta table.
MODE_FULL = "full"  # exact/prefix B-tree and the substring (trigram) index
MODE_EXACT = "exact"  # B-tree only: other patterns scan the type's entries
MODE_OFF = "off"  # nothing indexed; searches are refused
MODES = (MODE_FULL, MODE_EXACT, MODE_OFF)
DEFAULT_MODE = MODE_FULL

# Control characters other than tab, CR and LF: such data is not searchable text.
_CONTROL = re.compile("[\\x00-\\x08\\x0b\\x0c\\x0e-\\x1f\\x7f]")


class SearchError(ValueError):
    """A search that cannot be run as asked (bad pattern, too many terms, index off)."""


def searchable_key(key: str) -> bool:
    """Real handles only: idr's internal records live under ``0.<NAME>`` prefixes other than 0.NA."""
    prefix = key.partition("/")[0]
    return (not prefix.startswith("0.") or prefix == "0.NA") and len(key.encode("utf-8")) <= MAX_KEY


def _text(data: bytes) -> str | None:
    if len(data) > MAX_DATA:
        return None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if _CONTROL.search(text):
        return None
    return text


def index_entries(key: str, record: HandleRecord) -> list[tuple[str, str, str]]:
    """``(TYPE, data, key)`` for each searchable value of ``record`` stored under ``key``."""
    if not searchable_key(key):
        return []
    out: dict[tuple[str, str], None] = {}
    for v in record.values:
        if not v.public_read:
            continue
        type_ = v.type.upper()
        if not type_ or len(type_.encode("utf-8")) > MAX_TYPE or "\x00" in type_:
            continue
        text = _text(v.data)
        if text is not None and "\x00" not in text:
            out[(type_, text)] = None
    return [(t, d, key) for t, d in out]


def entries_of(items: Sequence[tuple[str, HandleRecord | None]]) -> Iterator[tuple[str, str, str]]:
    for key, rec in items:
        if rec is not None:
            yield from index_entries(key, rec)


@dataclass(frozen=True, slots=True)
class Term:
    """``type`` = ``pattern``: one search field of a query (all of a query's terms must hold)."""

    type: str
    pattern: str

    @property
    def wild(self) -> bool:
        return WILDCARD in self.pattern

    @property
    def literal_prefix(self) -> str:
        """The characters before the first ``*`` (the whole pattern when it has none)."""
        return self.pattern.partition(WILDCARD)[0]

    @property
    def is_prefix(self) -> bool:
        """``abc*``: one wildcard, at the end."""
        return self.pattern.endswith(WILDCARD) and self.pattern.count(WILDCARD) == 1

    @property
    def longest_run(self) -> int:
        return max((len(p) for p in self.pattern.split(WILDCARD)), default=0)

    @property
    def uses_substring_index(self) -> bool:
        """Whether, in ``full`` mode, this term is found through the trigram index."""
        return self.wild and not self.literal_prefix and self.longest_run >= TRIGRAM


def by_selectivity(terms: Sequence[Term]) -> list[Term]:
    """Terms, the one likely to match fewest entries first (it drives the query)."""

    def rank(t: Term) -> tuple[int, int]:
        if not t.wild:
            return (0, 0)
        if t.literal_prefix:
            return (1, -len(t.literal_prefix))
        if t.longest_run >= TRIGRAM:
            return (2, -t.longest_run)
        return (3, 0)

    return sorted(terms, key=rank)


def make_terms(pairs: Sequence[tuple[str, str]]) -> tuple[Term, ...]:
    """Checked terms from ``(type, pattern)`` pairs; SearchError says what is wrong."""
    if not pairs:
        raise SearchError("give at least one TYPE=VALUE to search for (e.g. URL=https://example.org/*)")
    if len(pairs) > MAX_TERMS:
        raise SearchError(f"at most {MAX_TERMS} search fields in one query, not {len(pairs)}")
    out = []
    for type_, pattern in pairs:
        t = type_.strip().upper()
        if not t or len(t.encode("utf-8")) > MAX_TYPE:
            raise SearchError(f"search field {type_!r} is not a value type")
        if len(pattern.encode("utf-8")) > MAX_PATTERN:
            raise SearchError(
                f"pattern for {t} is longer than {MAX_PATTERN} bytes (longer values are not indexed)"
            )
        if any(ord(c) < 0x20 and c not in "\t\r\n" for c in pattern) or "\x00" in pattern:
            raise SearchError(f"pattern for {t} contains a control character")
        out.append(Term(t, pattern))
    return tuple(out)


def check_page(limit: int | None, offset: int | None) -> tuple[int, int]:
    lim = DEFAULT_LIMIT if limit is None else limit
    off = 0 if offset is None else offset
    if not 0 < lim <= MAX_LIMIT:
        raise SearchError(f"limit must be 1…{MAX_LIMIT}, not {lim}")
    if off < 0:
        raise SearchError(f"page (results to skip) must not be negative, not {off}")
    return lim, off


def upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (code point order,
    which is UTF-8 byte order, as both engines compare keys); None when there is none."""
    chars = list(prefix)
    while chars:
        last = ord(chars.pop())
        nxt = last + 1
        if 0xD800 <= nxt <= 0xDFFF:
            nxt = 0xE000
        if nxt <= 0x10FFFF:
            return "".join(chars) + chr(nxt)
    return None


def glob_pattern(pattern: str) -> str:
    """SQLite GLOB for a search pattern: ``*`` stays, ``?`` and ``[`` are made literal."""
    out = []
    for c in pattern:
        if c == "?":
            out.append("[?]")
        elif c == "[":
            out.append("[[]")
        else:
            out.append(c)
    return "".join(out)


def like_pattern(pattern: str) -> str:
    """PostgreSQL LIKE (escape ``\\``) for a search pattern: ``*`` → ``%``, the rest literal."""
    out = []
    for c in pattern:
        if c == "*":
            out.append("%")
        elif c in "%_\\":
            out.append("\\" + c)
        else:
            out.append(c)
    return "".join(out)


# --------------------------------------------------------------------------- SQL, both engines


@dataclass(frozen=True, slots=True)
class Dialect:
    """What differs between the engines' search SQL over the same ``value_index`` table."""

    mark: str  # parameter placeholder
    wildcard_op: str  # GLOB (SQLite, case-sensitive) or LIKE (PostgreSQL, case-sensitive)
    pattern: Callable[[str], str]  # search pattern → ``wildcard_op`` pattern
    by_key: str  # the table as the per-handle check reads it: through its key index
    substring: Callable[[Term], tuple[str, list[object]]] | None = None  # an engine's own path


def term_sql(t: Term, d: Dialect) -> tuple[str, list[object]]:
    """The keys matching one term (column ``key``); see the module docstring for the cost."""
    m = d.mark
    if not t.wild:
        return f"SELECT key FROM value_index WHERE type = {m} AND data = {m}", [t.type, t.pattern]
    if not t.literal_prefix and d.substring is not None and t.uses_substring_index:
        return d.substring(t)
    sql = f"SELECT key FROM value_index WHERE type = {m}"
    params: list[object] = [t.type]
    if t.literal_prefix:
        sql += f" AND data >= {m}"
        params.append(t.literal_prefix)
        hi = upper_bound(t.literal_prefix)
        if hi is not None:
            sql += f" AND data < {m}"
            params.append(hi)
    if not t.is_prefix:
        sql += f" AND data {d.wildcard_op} {m}"
        params.append(d.pattern(t.pattern))
    return sql, params


def search_sql(terms: Sequence[Term], d: Dialect, limit: int, offset: int) -> tuple[str, list[object]]:
    """One query: the most selective term's keys, each checked against the other terms by
    its key, joined to the handles for their names, in key order, paged."""
    if not terms:
        raise SearchError("a search needs at least one term")
    m = d.mark
    first, *others = by_selectivity(terms)
    driver, params = term_sql(first, d)
    checks = []
    for t in others:
        if t.wild:
            match, p = f"f.data {d.wildcard_op} {m}", d.pattern(t.pattern)
        else:
            match, p = f"f.data = {m}", t.pattern
        checks.append(f"EXISTS (SELECT 1 FROM {d.by_key} WHERE f.key = m.key AND f.type = {m} AND {match})")
        params += [t.type, p]
    sql = (
        f"SELECT h.handle FROM ({driver.replace('SELECT ', 'SELECT DISTINCT ', 1)}) m "
        "JOIN handles h ON h.key = m.key"
        + (" WHERE " + " AND ".join(checks) if checks else "")
        + f" ORDER BY m.key LIMIT {m} OFFSET {m}"
    )
    return sql, [*params, limit, offset]
