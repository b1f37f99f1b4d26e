"""GS1 resolver behaviour that is not HTTP: links stored in handle records, choosing among
them, the RFC 9264 linkset and the ``Link`` header. Pure; ``server/gs1.py`` does the I/O.

Storage (docs/schemes.md): a link is a handle value of type ``GS1_LINK`` whose data is
JSON ``{"linkType","href","title","hreflang":[…],"type","context":[…]}``; a value of type
``GS1_DEFAULT_LINKTYPE`` names the record's default link type. A record with no GS1_LINK
value still resolves: its ``URL`` values serve as ``gs1:defaultLink``.

Choosing (GS1 resolver standard, as the GS1 community resolver does it): among the links
of the wanted type, try language + context + media type, then each pair, then each one
alone, then links without a language (``und``), then all of them; the first step that
matches anything decides. One link → redirect; several → the client chooses (300).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import quote

import orjson

from idr.model.url import script_scheme
from idr.model.value import HandleValue

GS1_VOC = "https://gs1.org/voc/"
SCHEMA_ORG = "http://schema.org/"
DEFAULT_LINK = GS1_VOC + "defaultLink"
DEFAULT_LINK_MULTI = GS1_VOC + "defaultLinkMulti"
LINK_TYPE = "GS1_LINK"
DEFAULT_TYPE_TYPE = "GS1_DEFAULT_LINKTYPE"
LINKSET_MEDIA = "application/linkset+json"
LINKSET_CONTEXT = "https://ref.gs1.org/standards/resolver/linkset-context"
JSONLD_CONTEXT_REL = "http://www.w3.org/ns/json-ld#context"
LINKSET_LINKTYPES = frozenset({"linkset", "all"})  # "all" is deprecated (GS1 resolver standard 1.1)
MAX_HEADER_LINKS = 20  # keep the Link header well under common 8 KiB header limits
_VOC_BASES = (
    "https://gs1.org/voc/",
    "http://gs1.org/voc/",
    "https://ref.gs1.org/voc/",
    "http://ref.gs1.org/voc/",
)


class LinkError(ValueError):
    """A GS1_LINK value whose JSON is not a link."""


@dataclass(frozen=True, slots=True)
class Link:
    link_type: str  # absolute URI, GS1 terms as https://gs1.org/voc/<term>
    href: str
    title: str = ""
    hreflang: tuple[str, ...] = ()
    type: str = ""
    context: tuple[str, ...] = ()


def expand_link_type(text: str) -> str:
    """``pip``, ``gs1:pip``, ``https://ref.gs1.org/voc/pip`` → ``https://gs1.org/voc/pip``."""
    t = text.strip()
    low = t.lower()
    for base in _VOC_BASES:
        if low.startswith(base):
            return GS1_VOC + t[len(base) :]
    if low.startswith("gs1:"):
        return GS1_VOC + t[4:]
    if low.startswith("schema:"):
        return SCHEMA_ORG + t[7:]
    if ":" in t:
        return t
    return GS1_VOC + t


def curie(link_type: str) -> str:
    if link_type.startswith(GS1_VOC):
        return "gs1:" + link_type[len(GS1_VOC) :]
    if link_type.startswith(SCHEMA_ORG):
        return "schema:" + link_type[len(SCHEMA_ORG) :]
    return link_type


def same_type(a: str, b: str) -> bool:
    return a.casefold() == b.casefold()


def _strings(v: object, field: str) -> tuple[str, ...]:
    if v is None:
        return ()
    if isinstance(v, str):
        return (v,)
    if isinstance(v, list) and all(isinstance(x, str) for x in v):
        return tuple(v)
    raise LinkError(f"{field} must be a string or an array of strings")


def link_from_json(data: bytes) -> Link:
    try:
        o = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise LinkError(f"not JSON: {e}") from e
    if not isinstance(o, dict):
        raise LinkError("a GS1 link is a JSON object")
    lt, href = o.get("linkType"), o.get("href")
    if not isinstance(lt, str) or not lt.strip():
        raise LinkError("linkType must be a non-empty string")
    if not isinstance(href, str) or not href.strip():
        raise LinkError("href must be a non-empty string")
    scheme = script_scheme(href)
    if scheme is not None:
        raise LinkError(f"a {scheme}: href is never a link target")
    title, type_ = o.get("title", ""), o.get("type", "")
    if not isinstance(title, str) or not isinstance(type_, str):
        raise LinkError("title and type must be strings")
    return Link(
        expand_link_type(lt),
        href.strip(),
        title,
        _strings(o.get("hreflang"), "hreflang"),
        type_,
        _strings(o.get("context"), "context"),
    )


def link_to_json(link: Link) -> bytes:
    out: dict[str, object] = {"linkType": curie(link.link_type), "href": link.href}
    if link.title:
        out["title"] = link.title
    if link.hreflang:
        out["hreflang"] = list(link.hreflang)
    if link.type:
        out["type"] = link.type
    if link.context:
        out["context"] = list(link.context)
    return orjson.dumps(out)


def link_value(index: int, link: Link) -> HandleValue:
    return HandleValue(index, LINK_TYPE, link_to_json(link))


def default_type_value(index: int, link_type: str) -> HandleValue:
    return HandleValue(index, DEFAULT_TYPE_TYPE, curie(expand_link_type(link_type)).encode())


def links_from_values(values: Iterable[HandleValue]) -> tuple[list[Link], str | None]:
    """The record's links (undecodable GS1_LINK values are skipped) and its declared default type."""
    vals = sorted(values, key=lambda v: v.index)
    links: list[Link] = []
    declared: str | None = None
    urls: list[str] = []
    for v in vals:
        t = v.type.upper()
        if t == LINK_TYPE:
            try:
                links.append(link_from_json(v.data))
            except LinkError:
                continue
        elif t == DEFAULT_TYPE_TYPE and declared is None:
            text = v.data.decode("utf-8", "replace").strip()
            declared = expand_link_type(text) if text else None
        elif t == "URL":
            urls.append(v.data.decode("utf-8", "replace").strip())
    if not links:
        links = [Link(DEFAULT_LINK, u) for u in urls if u]
    return links, declared


def default_link_type(links: Sequence[Link], declared: str | None) -> str | None:
    """Declared type if any link has it, else gs1:defaultLink if present, else the first link's type."""
    for want in (declared, DEFAULT_LINK):
        if want is not None and any(same_type(lk.link_type, want) for lk in links):
            return want
    return links[0].link_type if links else None


def of_type(links: Iterable[Link], link_type: str) -> list[Link]:
    return [lk for lk in links if same_type(lk.link_type, link_type)]


# --------------------------------------------------------------------------- negotiation


def parse_accept_language(header: str | None) -> list[str]:
    """Languages by preference (q-value, then order); ``*`` and q=0 dropped."""
    if not header:
        return []
    ranked: list[tuple[float, int, str]] = []
    for i, item in enumerate(header.split(",")[:32]):
        lang, _, params = item.strip().partition(";")
        q = 1.0
        for p in params.split(";"):
            k, _, v = p.strip().partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        lang = lang.strip().lower()
        if lang and lang != "*" and q > 0:
            ranked.append((-q, i, lang))
    return [lang for _, _, lang in sorted(ranked)]


def parse_accept(header: str | None) -> list[str]:
    """Concrete media types the client accepts (wildcards carry no preference for a link's type)."""
    if not header:
        return []
    out = []
    for item in header.split(",")[:32]:
        mt = item.split(";")[0].strip().lower()
        if mt and "*" not in mt:
            out.append(mt)
    return out


def wants_linkset(media: Sequence[str]) -> bool:
    """RFC 9264: ``application/linkset+json`` asks for the linkset; so does plain JSON from a non-browser."""
    return LINKSET_MEDIA in media or ("application/json" in media and "text/html" not in media)


def _lang_match(link: Link, lang: str) -> bool:
    base = lang.split("-")[0]
    return any(h.lower() == lang or h.lower().split("-")[0] == base for h in link.hreflang)


def select(
    links: Sequence[Link], languages: Sequence[str], context: str | None, media: Sequence[str]
) -> list[Link]:
    """The best candidates; more than one means the client has to choose."""
    steps = (
        (True, True, True),
        (True, True, False),
        (True, False, True),
        (False, True, True),
        (True, False, False),
        (False, True, False),
        (False, False, True),
    )
    for use_lang, use_ctx, use_media in steps:
        if (use_lang and not languages) or (use_ctx and not context) or (use_media and not media):
            continue
        for lang in languages if use_lang else (None,):
            found = [
                lk
                for lk in links
                if (lang is None or _lang_match(lk, lang))
                and (not use_ctx or context in lk.context)
                and (not use_media or lk.type.lower() in media)
            ]
            if found:
                return found
    und = [lk for lk in links if not lk.hreflang or "und" in lk.hreflang]
    return und or list(links)


# --------------------------------------------------------------------------- output


def fill_templates(href: str, ai_values: Mapping[str, str]) -> str:
    """``https://x/{01}/batch/{10}`` → values from the request's path (percent-encoded)."""
    if "{" not in href:
        return href
    for code, value in ai_values.items():
        href = href.replace("{" + code + "}", quote(value, safe=""))
    return href


def target_json(link: Link) -> dict[str, object]:
    out: dict[str, object] = {"href": link.href, "title": link.title or curie(link.link_type)}
    if link.hreflang:
        out["hreflang"] = list(link.hreflang)
    if link.type:
        out["type"] = link.type
    if link.context:
        out["context"] = list(link.context)
    return out


def linkset(anchor: str, links: Sequence[Link], default_type: str | None = None) -> dict[str, object]:
    """RFC 9264 JSON linkset: one context object, one array of targets per relation type.

    The default link is listed under ``gs1:defaultLink`` too (GS1 resolver standard) when
    the record declares it by another type.
    """
    entry: dict[str, object] = {"anchor": anchor}
    for lk in links:
        targets = entry.setdefault(lk.link_type, [])
        assert isinstance(targets, list)
        targets.append(target_json(lk))
    if default_type is not None and DEFAULT_LINK not in entry:
        first = of_type(links, default_type)
        if first:
            entry[DEFAULT_LINK] = [target_json(first[0])]
    return {"linkset": [entry]}


def _quoted(text: str) -> str:
    """A header quoted-string; stored data never smuggles a control character into a header."""
    clean = "".join(c for c in text if 0x20 <= ord(c) < 0x7F)
    return '"' + clean.replace("\\", "\\\\").replace('"', '\\"') + '"'


def safe_uri(uri: str) -> str:
    """Header-safe URI: non-ASCII and control characters percent-encoded, reserved ones kept."""
    return quote(uri, safe=":/?#[]@!$&'()*+,;=%~-._")


def link_header(anchor: str | None, links: Sequence[Link] = ()) -> str:
    """The ``Link`` header every response carries: the linkset, its JSON-LD context, the links."""
    parts = []
    if anchor is not None:
        parts.append(f'<{safe_uri(anchor)}?linkType=linkset>; rel="linkset"; type="{LINKSET_MEDIA}"')
    parts.append(f'<{LINKSET_CONTEXT}>; rel="{JSONLD_CONTEXT_REL}"; type="application/ld+json"')
    for lk in links[:MAX_HEADER_LINKS]:
        p = f"<{safe_uri(lk.href)}>; rel={_quoted(lk.link_type)}"
        if lk.type:
            p += f"; type={_quoted(lk.type)}"
        for h in lk.hreflang:
            p += f"; hreflang={_quoted(h)}"
        if lk.title:
            if lk.title.isascii():
                p += f"; title={_quoted(lk.title)}"
            else:  # RFC 8187 extended value for non-ASCII titles
                p += f"; title*=UTF-8''{quote(lk.title, safe='')}"
        parts.append(p)
    return ", ".join(parts)


def with_query(href: str, raw_query: str) -> str:
    """The incoming query string goes on to the target (GS1 resolver standard), joined with ``&``."""
    if not raw_query:
        return href
    return href + ("&" if "?" in href else "?") + raw_query
