"""The prefix lifecycle: application, real-name review, allocation, filing, verification records.

A secondary node's business (二级节点的前缀申请与分配): an enterprise applies for a prefix with
its name, unified social credit code (统一社会信用代码, checked per GB 32100-2015) and
contact; an admin of the secondary reviews it (实名审核) and approves or rejects with a
reason; approval allocates ``<parent>.N`` (the next free number, or the one asked for),
writes its prefix handle ``0.NA/<parent>.N`` with the applicant's key as its admin identity
(``300:0.NA/<parent>.N``) and homes it here until it is delegated to an enterprise node of its
own. Filing with the top (备案) is done by the caller over the network (``idr.resolver.filing``);
its outcome is recorded on the application. The top keeps its register as ``0.FILING/<prefix>``.

Everything is stored as ordinary records under reserved prefixes no request can reach
(``0.PREFIXAPP/<id>``, ``0.FILING/<prefix>``), written through the node's single writer, so it
is in the transaction log — the audit trail — and replicates, on any store engine.
"""

from __future__ import annotations

import re
import secrets
from collections import deque
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from typing import Any

from idr.codec.site import encode_site
from idr.codec.values import encode_admin
from idr.core import stats
from idr.core.federation import FederatedService
from idr.core.jsonvalues import json_of, json_value
from idr.core.secret_policy import admin_secret_problem
from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import normalize_key, prefix_handle
from idr.model.site import SiteInfo
from idr.model.value import (
    PERM_DEFAULT,
    PERM_SECRET,
    AdminPermission,
    AdminRecord,
    HandleRecord,
    HandleValue,
    ValueReference,
)

APPLICATIONS = "0.PREFIXAPP"
FILINGS = "0.FILING"
APPLICATION_TYPE = "IDR.PREFIX_APPLICATION"
FILING_TYPE = "IDR.FILING"
ADMIN_INDEX = 300
MAX_ALLOCATION_SCAN = 100_000
MAX_TEXT = 256

# ------------------------------------------------------------------ 统一社会信用代码 (GB 32100-2015)

USCC_CHARS = "0123456789ABCDEFGHJKLMNPQRTUWXY"  # 31 characters: no I, O, S, V, Z
_USCC_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
_USCC_AUTHORITIES = "123456789ANY"  # 登记管理部门代码


def uscc_check_char(first17: str) -> str:
    """The 18th character of a unified social credit code from its first 17 (GB 32100 §4.3)."""
    total = sum(USCC_CHARS.index(c) * w for c, w in zip(first17, _USCC_WEIGHTS, strict=True))
    return USCC_CHARS[(31 - total % 31) % 31]


def uscc_error(code: str) -> str | None:
    """Why ``code`` is not a unified social credit code, or None."""
    c = code.strip().upper()
    if len(c) != 18:
        return f"a unified social credit code has 18 characters, not {len(c)}"
    bad = sorted({ch for ch in c if ch not in USCC_CHARS})
    if bad:
        return f"character(s) {''.join(bad)!r} not allowed (GB 32100 excludes I, O, S, V, Z)"
    if c[0] not in _USCC_AUTHORITIES:
        return f"registration authority code {c[0]!r} is not one of {_USCC_AUTHORITIES}"
    if not c[2:8].isdigit():
        return f"administrative division code {c[2:8]!r} is not six digits"
    want = uscc_check_char(c[:17])
    if c[17] != want:
        return f"check character is {c[17]!r}, expected {want!r}"
    return None


# ------------------------------------------------------------------ records


@dataclass
class Application:
    """A prefix application as stored (the applicant's key is kept apart, admin-only)."""

    id: str
    parent: str
    enterprise: str
    uscc: str
    contact: str
    requested: str = ""
    status: str = "pending"  # pending → approved | rejected
    prefix: str = ""
    reason: str = ""
    applicant: str = ""
    reviewer: str = ""
    created: int = 0
    decided: int = 0
    key_kind: str = "seckey"  # HS_SECKEY or HS_PUBKEY for the new prefix's admin
    filed: bool = False
    filing_error: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> Application:
        known = {k: obj[k] for k in cls.__dataclass_fields__ if k in obj}
        return cls(**known)


def _bad(message: str) -> HandleError:
    return HandleError(ResponseCode.INVALID_VALUE, message)


class TooManyApplications(HandleError):
    """An application refused for volume, not content (HTTP 429 with ``Retry-After``): too
    many from its source network lately (the front-end's count), or too many waiting for
    review under its parent (``max_pending_applications``)."""

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(ResponseCode.SERVER_TOO_BUSY, message)
        self.retry_after = retry_after


def _text(value: str, what: str, *, required: bool = True) -> str:
    v = value.strip()
    if required and not v:
        raise _bad(f"{what} is required")
    if len(v) > MAX_TEXT or any(ord(ch) < 0x20 for ch in v):
        raise _bad(f"{what} must be one line of at most {MAX_TEXT} characters")
    return v


class PrefixRegistry:
    """Applications for prefixes under ``parent`` at a secondary node, and their review."""

    def __init__(self, service: FederatedService, parent: str) -> None:
        if not service.serves_prefix(parent):
            raise ValueError(f"this node is not home to {parent}")
        self.service = service
        self.parent = parent

    # ---------------------------------------------------------- applying

    async def apply(
        self,
        *,
        enterprise: str,
        uscc: str,
        contact: str,
        secret: str | None = None,
        public_key: bytes | None = None,
        requested: str = "",
        applicant: ValueReference | None = None,
    ) -> Application:
        """Record an application; the code is validated now so the reviewer sees only real ones."""
        err = uscc_error(uscc)
        if err:
            raise _bad(f"unified social credit code: {err}")
        if (secret is None) == (public_key is None):
            raise _bad("give exactly one admin key for the new prefix: a secret or a public key")
        problem = admin_secret_problem(secret) if secret is not None else None
        if problem is not None:
            raise _bad(problem)
        now = int(self.service.clock())
        app = Application(
            id=f"APP-{secrets.token_hex(5).upper()}",
            parent=self.parent,
            enterprise=_text(enterprise, "enterprise name"),
            uscc=uscc.strip().upper(),
            contact=_text(contact, "contact"),
            requested=requested,
            applicant=str(applicant or ""),
            created=now,
            key_kind="seckey" if secret is not None else "pubkey",
        )
        key = (
            HandleValue(ADMIN_INDEX, "HS_SECKEY", secret.encode("utf-8"), permissions=PERM_SECRET)
            if secret is not None
            else HandleValue(ADMIN_INDEX, "HS_PUBKEY", public_key or b"", permissions=PERM_SECRET)
        )

        def job() -> Application:
            if requested:
                self._check_requested(requested)
            self._require_room()
            self._save(app, "prefix-apply", applicant, key)
            return app

        return await self.service.write(job)

    def _require_room(self) -> None:
        """Anyone may apply, and each application is a stored record: at most
        ``max_pending_applications`` wait for review under one parent (checked in the write
        job against what is committed: one write group may pass it by its own size)."""
        cap = self.service.max_pending_applications
        if len(self.applications("pending")) >= cap:
            raise TooManyApplications(
                f"{cap} applications under {self.parent} are waiting for review: "
                "apply again once they are decided",
                3600,
            )

    def _check_requested(self, prefix: str) -> None:
        head, dot, last = prefix.rpartition(".")
        if (
            not dot
            or normalize_key(head) != normalize_key(self.parent)
            or not re.fullmatch(r"[0-9]{1,9}", last)
        ):
            raise _bad(f"a prefix under {self.parent} looks like {self.parent}.N, not {prefix!r}")
        if self.service.load(prefix_handle(prefix)) is not None:
            raise HandleError(ResponseCode.HANDLE_ALREADY_EXISTS, f"prefix {prefix} is taken")

    # ---------------------------------------------------------- reading

    def _key(self, app_id: str) -> str:
        return f"{APPLICATIONS}/{app_id}"

    def get(self, app_id: str) -> Application:
        """The application ``app_id`` under this parent (one under another parent is not
        found here: its reviewers and its prefixes are that parent's)."""
        obj = json_of(self.service.load(self._key(app_id)), APPLICATION_TYPE)
        app = Application.from_json(obj) if obj is not None else None
        if app is None or app.parent != self.parent:
            raise HandleError(ResponseCode.HANDLE_NOT_FOUND, f"no application {app_id} under {self.parent}")
        return app

    async def read(self, app_id: str) -> Application:
        """``get`` from the event loop: the record is read off the loop first where the
        store's reads may block (PostgreSQL)."""
        await self.service.preload([self._key(app_id)])
        return self.get(app_id)

    def applications(self, status: str | None = None) -> list[Application]:
        out = []
        for name in _all_under(self.service, APPLICATIONS):
            obj = json_of(self.service.load(name), APPLICATION_TYPE)
            if obj is None:
                continue
            app = Application.from_json(obj)
            if app.parent == self.parent and (status is None or app.status == status):
                out.append(app)
        return sorted(out, key=lambda a: (a.created, a.id))

    # ---------------------------------------------------------- review (实名审核)

    def may_review(self, identity: ValueReference | None) -> bool:
        """Whether ``identity`` reviews applications under the parent: one of its admins with
        the right to add derived prefixes. Only reviewers see applications — they hold an
        applicant's contact and credit code (personal data)."""
        if identity is None:
            return False
        parent = self.service.load(prefix_handle(self.parent))
        return self.service.may(identity, parent, AdminPermission.ADD_DERIVED_PREFIX)

    def _require_reviewer(self, reviewer: ValueReference) -> None:
        if not self.may_review(reviewer):
            raise HandleError(
                ResponseCode.INSUFFICIENT_PERMISSIONS,
                f"{reviewer} may not review prefixes under {self.parent}",
            )

    async def approve(
        self, app_id: str, reviewer: ValueReference, *, prefix: str = "", site: SiteInfo | None = None
    ) -> Application:
        """Allocate the prefix, write its prefix handle (admin = the applicant's key) and home it.

        One write job: the checks (pending, prefix free) see the state the write lands on."""
        return await self.service.write(lambda: self._approve(app_id, reviewer, prefix, site))

    def _approve(
        self, app_id: str, reviewer: ValueReference, prefix: str, site: SiteInfo | None
    ) -> Application:
        self._require_reviewer(reviewer)
        app = self.get(app_id)
        if app.status != "pending":
            raise _bad(f"application {app_id} is already {app.status}")
        wanted = prefix or app.requested
        if wanted:
            self._check_requested(wanted)
        else:
            wanted = self.next_free()
        rec = self.service.load(self._key(app_id))
        key = next((v for v in rec.values if v.index == ADMIN_INDEX), None) if rec else None
        if key is None:
            raise HandleError(ResponseCode.ERROR, f"application {app_id} has lost its admin key")
        app.status, app.prefix, app.reviewer = "approved", wanted, str(reviewer)
        app.decided = int(self.service.clock())
        ph = prefix_handle(wanted)
        secret = key.type.upper() == "HS_SECKEY"
        admin = AdminRecord(ph, ADMIN_INDEX, int(AdminPermission.ALL))
        values = [
            HandleValue(100, "HS_ADMIN", encode_admin(admin)),
            HandleValue(101, "HS_ADMIN", encode_admin(AdminRecord(str(reviewer.handle), reviewer.index))),
            # A secret key stays admin-only; a public key is public, as on any prefix handle.
            HandleValue(ADMIN_INDEX, key.type, key.data, permissions=PERM_SECRET if secret else PERM_DEFAULT),
            HandleValue(2, "DESC", f"{app.enterprise} ({app.uscc})".encode()),
        ]
        if site is not None:
            values.append(HandleValue(1, "HS_SITE", encode_site(site), ttl=3600))
        now = int(self.service.clock())
        prefix_rec = HandleRecord(
            ph, tuple(sorted((v.with_timestamp(now) for v in values), key=lambda v: v.index))
        )
        self.service.stage(
            "prefix-approve",
            reviewer,
            [
                (self._key(app_id), self._record(app, key)),
                (ph, prefix_rec),
                (f"0.HOMED/{normalize_key(wanted)}", HandleRecord(wanted, ())),
            ],
        )
        stats.count(stats.PREFIXES_ALLOCATED)
        return app

    async def reject(self, app_id: str, reviewer: ValueReference, reason: str) -> Application:
        def job() -> Application:
            self._require_reviewer(reviewer)
            app = self.get(app_id)
            if app.status != "pending":
                raise _bad(f"application {app_id} is already {app.status}")
            app.status, app.reason, app.reviewer = "rejected", _text(reason, "reason"), str(reviewer)
            app.decided = int(self.service.clock())
            self._save(app, "prefix-reject", reviewer)
            return app

        return await self.service.write(job)

    async def record_filing(self, app_id: str, ok: bool, error: str = "") -> Application:
        def job() -> Application:
            app = self.get(app_id)
            if ok and not app.filed:
                stats.count(stats.PREFIXES_FILED)
            app.filed, app.filing_error = ok, error[:MAX_TEXT]
            self._save(app, "prefix-filed" if ok else "prefix-filing-failed", None)
            return app

        return await self.service.write(job)

    def next_free(self) -> str:
        """``<parent>.N`` for the smallest N ≥ 1 not taken by a prefix handle or a reservation."""
        taken: set[int] = set()
        head = normalize_key(prefix_handle(self.parent)) + "."
        for i, name in enumerate(_all_under(self.service, "0.NA", start=head)):
            key = normalize_key(name)
            if not key.startswith(head) or i > MAX_ALLOCATION_SCAN:
                break
            last = key[len(head) :]
            if last.isdigit():
                taken.add(int(last))
        for app in self.applications("pending"):
            if app.requested:
                taken.add(int(app.requested.rpartition(".")[2]))
        n = 1
        # ``load`` also sees what earlier writes of this group staged (another approval).
        while n in taken or self.service.load(prefix_handle(f"{self.parent}.{n}")) is not None:
            n += 1
        return f"{self.parent}.{n}"

    # ---------------------------------------------------------- delegation to an enterprise node

    async def delegate(self, prefix: str, sites: list[SiteInfo], actor: ValueReference) -> None:
        """Point ``0.NA/<prefix>`` at the enterprise node's sites and stop serving it here."""
        await self.service.write(lambda: self._delegate(prefix, sites, actor))

    def _delegate(self, prefix: str, sites: list[SiteInfo], actor: ValueReference) -> None:
        from idr.core.federation import delegation_values

        ph = prefix_handle(prefix)
        rec = self.service.load(ph)
        if rec is None:
            raise HandleError(ResponseCode.HANDLE_NOT_FOUND, f"{ph} not found")
        if not self.service.may(actor, rec, AdminPermission.MODIFY_VALUE):
            raise HandleError(ResponseCode.INSUFFICIENT_PERMISSIONS, f"{actor} may not delegate {prefix}")
        kept = [v for v in rec.values if not v.type.upper().startswith(("HS_SITE", "HS_SERV"))]
        now = int(self.service.clock())
        new = [v.with_timestamp(now) for v in delegation_values(sites)]
        values = tuple(sorted((*kept, *new), key=lambda v: v.index))
        self.service.stage(
            "prefix-delegate",
            actor,
            [(ph, HandleRecord(rec.handle, values)), (f"0.HOMED/{normalize_key(prefix)}", None)],
        )

    # ---------------------------------------------------------- storage

    def _record(self, app: Application, key: HandleValue | None) -> HandleRecord:
        values = [json_value(1, APPLICATION_TYPE, app.to_json())]
        if key is not None:
            values.append(key)
        return HandleRecord(self._key(app.id), tuple(values))

    def _save(
        self, app: Application, op: str, actor: ValueReference | None, key: HandleValue | None = None
    ) -> None:
        if key is None:
            old = self.service.load(self._key(app.id))
            key = next((v for v in old.values if v.index == ADMIN_INDEX), None) if old else None
        self.service.stage(op, actor, [(self._key(app.id), self._record(app, key))])


# ------------------------------------------------------------------ the top's filing register (备案)


@dataclass
class Filing:
    prefix: str
    parent: str
    enterprise: str
    uscc: str
    contact: str = ""
    filed_by: str = ""
    filed_at: int = 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


class FilingRegister:
    """At the top node: which enterprise prefixes are filed, by which secondary."""

    def __init__(self, service: FederatedService) -> None:
        self.service = service

    async def file(self, identity: ValueReference, filing: Filing) -> Filing:
        """Accept a filing from the parent prefix's admin (authenticated by the caller)."""
        return await self.service.write(lambda: self._file(identity, filing))

    def _file(self, identity: ValueReference, filing: Filing) -> Filing:
        err = uscc_error(filing.uscc)
        if err:
            raise _bad(f"unified social credit code: {err}")
        parent = filing.parent
        head, dot, last = filing.prefix.rpartition(".")
        if not dot or normalize_key(head) != normalize_key(parent) or not last:
            raise _bad(f"{filing.prefix} is not a prefix directly under {parent}")
        rec = self.service.load(prefix_handle(parent))
        if rec is None:
            raise HandleError(ResponseCode.HANDLE_NOT_FOUND, f"{parent} is not known at this top node")
        if not self.service.may(identity, rec, AdminPermission.ADD_DERIVED_PREFIX):
            raise HandleError(
                ResponseCode.INSUFFICIENT_PERMISSIONS, f"{identity} may not file prefixes under {parent}"
            )
        filing.filed_by, filing.filed_at = str(identity), int(self.service.clock())
        filing.enterprise = _text(filing.enterprise, "enterprise")
        filing.contact = _text(filing.contact, "contact", required=False)
        record = HandleRecord(f"{FILINGS}/{filing.prefix}", (json_value(1, FILING_TYPE, filing.to_json()),))
        self.service.stage("filing", identity, [(record.handle, record)])
        return filing

    def get(self, prefix: str) -> Filing | None:
        obj: dict[str, Any] | None = json_of(self.service.load(f"{FILINGS}/{prefix}"), FILING_TYPE)
        return Filing(**{k: obj[k] for k in Filing.__dataclass_fields__ if k in obj}) if obj else None

    def filings(self) -> list[Filing]:
        out = []
        for name in _all_under(self.service, FILINGS):
            f = self.get(name.partition("/")[2])
            if f is not None:
                out.append(f)
        return out

    def visible_to(self, identity: ValueReference | None) -> list[Filing]:
        """The filings ``identity`` may read (they name an enterprise's credit code and contact):
        every one for an admin of this (top) node, those under its own prefixes for a
        secondary's admin, none for anyone else."""
        if identity is None:
            return []
        if self.service.is_server_admin(identity):
            return self.filings()
        allowed: dict[str, bool] = {}

        def may(parent: str) -> bool:
            if parent not in allowed:
                rec = self.service.load(prefix_handle(parent))
                allowed[parent] = self.service.may(identity, rec, AdminPermission.ADD_DERIVED_PREFIX)
            return allowed[parent]

        return [f for f in self.filings() if may(f.parent)]


# ------------------------------------------------------------------ helpers


def _all_under(service: FederatedService, prefix: str, start: str | None = None) -> Iterator[str]:
    """Every handle under ``prefix`` in key order (paged by key; bounded by the store's size)."""
    after = start
    pkey = normalize_key(prefix)
    while True:
        page = service.store.list_handles(pkey, after, 1000)
        yield from page
        if len(page) < 1000:
            return
        after = normalize_key(page[-1])


def audit_trail(
    service: FederatedService, *, since: int = 0, limit: int = 1000, match: str = ""
) -> list[dict[str, Any]]:
    """Log entries (newest ``limit`` after ``since``) whose keys contain ``match``: who did what
    when. Walks the log from ``since`` (a page at a time, keeping only ``limit`` entries): run it
    off the event loop (``idr.server.scans``)."""
    out: deque[dict[str, Any]] = deque(maxlen=max(1, limit))
    seq = since
    needle = normalize_key(match) if match else ""
    for _ in range(100_000):  # bounded walk over the log, one page at a time
        page = service.store.log_since(seq, 1000)
        if not page:
            break
        for e in page:
            keys = [w.key for w in e.writes if not stats.is_counter_key(w.key)]
            if needle and not any(needle in k for k in keys):
                continue
            out.append({"seq": e.seq, "time": e.timestamp, "op": e.op, "actor": e.actor, "keys": keys})
        seq = page[-1].seq
    return list(out)
