"""Federation in the core: who serves a prefix, and the referral a node gives when it is not it.

Delegation uses the Handle System's own records (RFC 3651 §3.2.2, Handle.Net's GHR/LHS
model), stored at the *parent*:

* ``0.NA/<P>`` with ``HS_SITE`` / ``HS_SITE.6`` / ``HS_SERV`` values says which service
  serves handles ``P/…``. The top node holds these for secondary prefixes (it homes ``0.NA``);
  a secondary node holds them for the enterprise prefixes it delegates to enterprise nodes.
* ``0.NA/<P>`` with ``HS_SITE.PREFIX`` / ``HS_SERV.PREFIX`` says which service holds the
  *derived* prefix handles ``0.NA/P.…`` (how the top hands ``0.NA/88.118.8`` to the
  ``88.118`` secondary).

A node answers for what it homes. For anything else it finds the nearest record above and
answers the Handle way: ``302 SERVICE_REFERRAL`` with the ``HS_SITE``/``HS_SERV`` values of
``0.NA/<P>``, ``303 PREFIX_REFERRAL`` with the ``.PREFIX`` values of an ancestor, or ``301``
(not responsible) when it knows nothing. Handle.Net clients follow 302/303 (reference notes
§1.9 step 6); idr's recursive resolver does too. Nothing here opens a socket.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from idr.codec.envelope import PROTOCOL_MAJOR, PROTOCOL_MINOR
from idr.codec.site import decode_site, encode_site
from idr.codec.wire import ProtocolError
from idr.core.request import Request, Response
from idr.core.service import NodeService
from idr.core.site import server_info
from idr.model.errors import ResponseCode
from idr.model.handle import NA_PREFIX, Handle, normalize_key, prefix_handle
from idr.model.site import SiteInfo
from idr.model.value import AdminPermission, HandleRecord, HandleValue, ValueReference
from idr.store.base import Store

ROLES_AUTHORITATIVE = ("standalone", "top", "secondary", "enterprise")
SITE_TYPES = ("HS_SITE", "HS_SITE.6")
SERVICE_TYPES = (*SITE_TYPES, "HS_SERV")
PREFIX_SERVICE_TYPES = ("HS_SITE.PREFIX", "HS_SERV.PREFIX")
SITE_TTL = 3600  # how long resolvers may keep where a prefix lives
FEDERATION_FILE = "federation.toml"


def ancestors(prefix: str) -> list[str]:
    """``88.118.8`` → ``["88.118.8", "88.118", "88"]``: the prefix and each parent, nearest first."""
    parts = prefix.split(".")
    return [".".join(parts[:n]) for n in range(len(parts), 0, -1)]


def site_values(record: HandleRecord, types: Sequence[str]) -> tuple[HandleValue, ...]:
    """The values of ``record`` whose type is one of ``types`` (exactly, case-insensitively)."""
    wanted = {t.upper() for t in types}
    return tuple(v for v in record.values if v.type.upper() in wanted)


def sites_of(values: Iterable[HandleValue]) -> list[SiteInfo]:
    """Decoded sites of HS_SITE-like values, primaries first (clients prefer them, RFC 3652 §3.3)."""
    out: list[SiteInfo] = []
    for v in values:
        if v.type.upper().startswith("HS_SITE"):
            try:
                out.append(decode_site(v.data))
            except ProtocolError:  # a malformed site is skipped, as Handle.Net's resolver does
                continue
    return sorted(out, key=lambda s: not s.primary)


def loopback_site(
    name: str,
    *,
    native: int | None = None,
    http: int | None = None,
    https: int | None = None,
    host: str = "127.0.0.1",
    primary: bool = True,
    serial: int = 1,
    public_key: bytes = b"",
) -> SiteInfo:
    """A one-server site at ``host`` with the interfaces a node listens on; ``desc`` names it.

    As Handle.Net's server sets up its site (``SiteInfo(…)`` of ``hdl-setup-server``): protocol
    version 2.11 (what idr answers with), TCP for administration and queries, UDP for queries
    only — idr refuses writes over UDP, and hdllib sends a request to the first interface whose
    type admits it (``Interface.canHandleRequest``), so UDP must not claim admin.
    ``public_key``: the server's HS_PUBKEY data (what clients verify its signatures with)."""
    server = server_info(1, host, native=native, http=http, https=https, public_key=public_key)
    return SiteInfo(
        serial=serial,
        primary=primary,
        attributes=(("desc", name),),
        servers=(server,),
        protocol_major=PROTOCOL_MAJOR,
        protocol_minor=PROTOCOL_MINOR,
    )


def site_value(index: int, site: SiteInfo, type_: str = "HS_SITE", ttl: int = SITE_TTL) -> HandleValue:
    return HandleValue(index, type_, encode_site(site), ttl=ttl)


def delegation_values(
    sites: Sequence[SiteInfo], *, derived: bool = False, first_index: int = 1
) -> list[HandleValue]:
    """HS_SITE values for ``sites`` (indexes ``first_index…``); with ``derived``, the same sites
    again as HS_SITE.PREFIX (indexes ``first_index+50…``) so derived prefix handles go there too."""
    out = [site_value(first_index + i, s) for i, s in enumerate(sites)]
    if derived:
        out += [site_value(first_index + 50 + i, s, "HS_SITE.PREFIX") for i, s in enumerate(sites)]
    return out


def _names_node(v: HandleValue, site: SiteInfo) -> bool:
    """Whether ``v`` is an HS_SITE for the node whose own site is ``site``: one server at the same
    address with the same server key, or with the same interfaces (the node's key or its ports
    changed since it wrote it, not both). Names (``desc``) are no test: every node is "idr node"
    until named."""
    if v.type.upper() != "HS_SITE" or len(site.servers) != 1:
        return False
    try:
        other = decode_site(v.data)
    except ProtocolError:
        return False
    if len(other.servers) != 1:
        return False
    theirs, ours = other.servers[0], site.servers[0]
    if theirs.address != ours.address:
        return False
    same_key = bool(ours.public_key) and theirs.public_key == ours.public_key
    return same_key or set(theirs.interfaces) == set(ours.interfaces)


def with_own_site(values: Sequence[HandleValue], site: SiteInfo) -> tuple[HandleValue, ...] | None:
    """The values of a node's own prefix handle (``0.NA/<P>`` for a P it is home to) carrying
    ``site`` as HS_SITE, as the reference server's prefix handles name the site that serves them
    (the national SDK asks ``88.100`` for HS_SITE); None when nothing is to change.

    The node's value is the HS_SITE naming this node's server (``_names_node``): it is replaced
    when the node's listeners or key changed. A record whose service values name other sites
    only (an operator's HS_SITE for a primary and its mirrors, an HS_SERV) is left as written.
    A new value goes to index 1 (as the reference's) or the lowest free index."""
    service = [v for v in values if v.type.upper() in SERVICE_TYPES]
    mine = [v for v in service if _names_node(v, site)]
    if service and not mine:
        return None
    if len(mine) == 1 and mine[0].data == encode_site(site):
        return None
    if mine:
        index = mine[0].index
        kept = [v for v in values if not any(v is m for m in mine)]
    else:
        used = {v.index for v in values}
        index = next(i for i in range(1, len(used) + 2) if i not in used)
        kept = list(values)
    return tuple(sorted((*kept, site_value(index, site)), key=lambda v: v.index))


def without_own_site(values: Sequence[HandleValue], site: SiteInfo) -> tuple[HandleValue, ...] | None:
    """The values of a prefix handle once the node (``site``) stops serving the prefix: its own
    HS_SITE dropped, or it would refer handles of the prefix to itself; None when it has none."""
    kept = tuple(v for v in values if not _names_node(v, site))
    return kept if len(kept) < len(values) else None


def site_name(site: SiteInfo) -> str:
    """``desc`` of a site, else its first server's address: how traces and reports name it."""
    desc = site.attribute("desc")
    if desc:
        return desc
    return site.servers[0].host if site.servers else "?"


MAX_PENDING_APPLICATIONS = 1000


class FederatedService(NodeService):
    """A top, secondary or enterprise node: a ``NodeService`` that refers for what it delegates."""

    def __init__(
        self,
        store: Store,
        *,
        role: str = "standalone",
        max_pending_applications: int = MAX_PENDING_APPLICATIONS,
        **kwargs: Any,
    ) -> None:
        super().__init__(store, **kwargs)
        self.role = role
        # Prefix applications are anonymous: at most this many wait for review under one parent.
        self.max_pending_applications = max_pending_applications
        # What the assembler attaches for the HTTP routes (filing target, verifier…): opaque here.
        self.context: object | None = None

    # ------------------------------------------------------------- responsibility

    def _serves(self, h: Handle) -> bool:
        """Also the prefix handles of prefixes *derived* from a homed one: the parent serves
        ``0.NA/88.118.8`` (it delegates or hosts it), whoever serves ``88.118.8/…``."""
        if super()._serves(h):
            return True
        if not h.is_prefix_handle:
            return False
        homed = self._homed
        return any(normalize_key(a) in homed for a in ancestors(h.suffix)[1:])

    def may(self, identity: ValueReference, record: HandleRecord | None, perm: AdminPermission) -> bool:
        """Whether ``identity`` holds ``perm`` on ``record`` (or is an admin of this server)."""
        return self._allowed(identity, record, perm)

    def serves_prefix(self, prefix: str) -> bool:
        return normalize_key(prefix) in self._homed

    # ------------------------------------------------------------- referrals

    def referral_for(self, h: Handle) -> Response | None:
        """The referral this node gives for ``h``, or None when it answers ``h`` itself."""
        if h.is_prefix_handle:
            target = h.suffix
            if self._load(h.key) is not None:
                return None
            chain = ancestors(target)[1:]
        else:
            target = h.prefix
            if self.serves_prefix(target):
                return None
            chain = ancestors(target)
        for a in chain:
            if self.serves_prefix(a):
                return None  # a prefix homed here: the answer (or its absence) is ours
            rec = self._load(normalize_key(prefix_handle(a)))
            if rec is None:
                continue
            if a == target and not h.is_prefix_handle:
                values = site_values(rec, SERVICE_TYPES)
                if values:
                    return Response(
                        ResponseCode.SERVICE_REFERRAL, str(h), values, message=f"{a} is served elsewhere"
                    )
            values = site_values(rec, PREFIX_SERVICE_TYPES)
            if values:
                return Response(
                    ResponseCode.PREFIX_REFERRAL,
                    str(h),
                    values,
                    message=f"prefixes under {a} are served elsewhere",
                )
            if a == target:
                return None
        return None

    def resolve(self, req: Request) -> Response:
        h = Handle.parse(req.handle)
        self._check_share(h)
        referral = self.referral_for(h)
        if referral is not None:
            self.counters["resolutions"] += 1
            return referral
        return super().resolve(req)

    # ------------------------------------------------------------- internal writes

    async def commit_internal(
        self, op: str, actor: ValueReference | None, records: Sequence[tuple[str, HandleRecord | None]]
    ) -> int:
        """Write records (applications, filings, prefix handles, homing) as one logged
        transaction through the node's write path; returns its seq. Checks that must see the
        state the write lands on belong inside the job: ``await write(fn)`` with ``fn``
        calling :meth:`stage`."""
        job = await self.write_job(lambda: self.stage(op, actor, records))
        return job.seq

    def load(self, handle: str) -> HandleRecord | None:
        """A record by handle (internal ones too), from the cache or the store."""
        return self._load(normalize_key(handle))


# ----------------------------------------------------------------- per-node federation settings


@dataclass
class FederationSettings:
    """What a node knows of the federation beyond its own data (``<data>/federation.toml``).

    ``root``: the top service's native addresses (``host:port``, primary first) for recursive
    resolution and verification; ``root_names``: what traces call those sites (optional, in
    the same order). ``top_url``/``top_identity``/``top_secret``/``top_cafile``: how a
    secondary files prefixes with the top (HTTPS, Basic auth, pinned certificate).
    """

    root: list[str]
    root_names: list[str] = field(default_factory=list)
    top_url: str = ""
    top_identity: str = ""
    top_secret: str = ""
    top_cafile: str = ""
    # 数据上报: where this node reports its figures (a secondary: default the top_* above),
    # every report_interval seconds; industry (GB/T 4754 section, e.g. "C") and region
    # (GB/T 2260 code, e.g. "510000") label its figures in the breakdowns.
    parent_url: str = ""
    parent_identity: str = ""
    parent_secret: str = ""
    parent_cafile: str = ""
    report_interval: float = 60.0
    industry: str = ""
    region: str = ""

    @classmethod
    def load(cls, data_dir: Path) -> FederationSettings:
        import tomllib

        from idr.core.config import ConfigError

        path = Path(data_dir) / FEDERATION_FILE
        if not path.is_file():
            return cls(root=[])
        try:
            raw = tomllib.loads(path.read_text("utf-8")).get("federation", {})
        except (tomllib.TOMLDecodeError, UnicodeDecodeError, OSError) as e:
            raise ConfigError(f"{path}: {e}") from e
        if not isinstance(raw, dict) or not isinstance(raw.get("root", []), list):
            raise ConfigError(f'{path}: expected [federation] with root = ["HOST:PORT", …]')
        return cls(
            root=[str(a) for a in raw.get("root", [])],
            root_names=[str(a) for a in raw.get("root_names", [])],
            top_url=str(raw.get("top_url", "")),
            top_identity=str(raw.get("top_identity", "")),
            top_secret=str(raw.get("top_secret", "")),
            top_cafile=str(raw.get("top_cafile", "")),
            parent_url=str(raw.get("parent_url", "")),
            parent_identity=str(raw.get("parent_identity", "")),
            parent_secret=str(raw.get("parent_secret", "")),
            parent_cafile=str(raw.get("parent_cafile", "")),
            report_interval=_interval(raw.get("report_interval", 60.0), path),
            industry=str(raw.get("industry", "")),
            region=str(raw.get("region", "")),
        )

    def save(self, data_dir: Path) -> None:
        import tomli_w

        from idr.private import write_private

        doc = {"federation": {k: v for k, v in self.__dict__.items() if v}}
        # It may hold the secret the node files with: created private, never world-readable.
        write_private(Path(data_dir) / FEDERATION_FILE, tomli_w.dumps(doc).encode("utf-8"))


def _interval(value: object, path: Path) -> float:
    from idr.core.config import ConfigError

    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.05 <= value <= 86400:
        raise ConfigError(f"{path}: report_interval is seconds between 0.05 and 86400, not {value!r}")
    return float(value)


def make_service(role: str, store: Store, **kwargs: Any) -> NodeService:
    """The core service for a role: authoritative roles refer for what they delegate."""
    if role in ROLES_AUTHORITATIVE:
        return FederatedService(store, role=role, **kwargs)
    raise ValueError(f"role {role!r} has no authoritative service (a recursive node uses the resolver)")


__all__ = [
    "NA_PREFIX",
    "FederatedService",
    "FederationSettings",
    "ancestors",
    "delegation_values",
    "loopback_site",
    "make_service",
    "site_name",
    "sites_of",
]
