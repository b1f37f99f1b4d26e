"""The twin-city federation of ``idr demo``: seven nodes in one process, and a supply chain.

Chongqing hosts the national top-level node (primary site) and Chengdu its disaster-recovery
mirror (一顶一备); a Chongqing automotive secondary node (``88.118``) and a Sichuan
battery/electronics secondary node (``88.168``) sit below it, each with an enterprise node
(a Chongqing vehicle maker ``88.118.8``, a Yibin cell plant ``88.168.6``), and a public
recursive node resolves for clients. A vehicle at the Chongqing enterprise node refers to its
battery pack, registered through the Sichuan secondary node (``88.168.2``, a pack line with no
node of its own), which refers to cells at the Yibin enterprise node — three nodes, two
regions, linked by references. Prefix numbers are illustrative.

The top is one service with two sites: Chongqing is the primary, Chengdu a mirror that
follows its transaction log (``idr.replication``, sync mode), so every delegation is written
once, in Chongqing, and reaches Chengdu by log shipping; ``0.NA/0.NA`` lists both sites
(HS_SITE), and recursive resolution falls over to Chengdu when Chongqing stops.

The Yibin prefix goes through the real lifecycle: application with a unified social credit
code, real-name review and approval, filing with the top over HTTPS, delegation to its node.
The Yibin cell also carries a GS1 key (GTIN + serial under the plant's GS1 company prefix)
and an Ecode: the top delegates ``GS1.<company prefix>`` and ``ECODE.<V>.<NSI>`` to the
Yibin node, which holds the two scheme handles as aliases (``HS_ALIAS``) of the cell's
handle, so every form resolves to the one record (docs/schemes.md).

The same assembly (:func:`start_node`, :class:`Federation`) is what the tests start.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from idr.codec.values import encode_admin
from idr.core.config import ConfigError, NodeConfig, ReplicationConfig
from idr.core.federation import FederatedService, FederationSettings, delegation_values
from idr.core.interface import Core
from idr.core.prefixes import PrefixRegistry
from idr.core.request import Op, Request
from idr.core.templates import TEMPLATE_INDEX, TEMPLATE_TYPE
from idr.model.handle import prefix_handle
from idr.model.site import SiteInfo
from idr.model.value import PERM_SECRET, AdminPermission, AdminRecord, HandleValue, ValueReference
from idr.node import Node

HOST = "127.0.0.1"
# Default ports: a block well away from the usual suspects (2641, 8000, 8080, 8443, 5432…);
# each node gets native = base, HTTP = base + 1, HTTPS = base + 2; busy ones are replaced.
DEMO_BASE_PORT = 26400

TOP_SECRET = "top-demo-secret"
DEMO_REPORT_INTERVAL = 2.0  # seconds between reports (a real federation: report_interval, default 60)


@dataclass
class RunningNode:
    """A started node of the federation and what others need to know of it."""

    key: str
    name: str
    role: str
    prefix: str
    secret: str
    node: Node
    site: SiteInfo
    native: tuple[str, int]
    http: tuple[str, int]
    https: tuple[str, int]

    @property
    def service(self) -> Core:
        return self.node.service

    @property
    def federated(self) -> FederatedService:
        assert isinstance(self.node.service, FederatedService)
        return self.node.service

    @property
    def admin(self) -> ValueReference:
        return ValueReference(prefix_handle(self.prefix), 300)

    @property
    def http_url(self) -> str:
        return f"http://{self.http[0]}:{self.http[1]}"

    @property
    def https_url(self) -> str:
        return f"https://{self.https[0]}:{self.https[1]}"

    @property
    def cert(self) -> Path:
        return self.node.config.data_dir / "tls" / "cert.pem"


# --------------------------------------------------------------------------- ports


def _port_free(port: int, udp_too: bool) -> bool:
    kinds = [socket.SOCK_STREAM, socket.SOCK_DGRAM] if udp_too else [socket.SOCK_STREAM]
    for kind in kinds:
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind((HOST, port))
            except OSError:
                return False
    return True


def pick_port(preferred: int, *, udp_too: bool = False, taken: set[int] | None = None) -> int:
    """``preferred`` if free (TCP, and UDP for the native port), else a free ephemeral port."""
    taken = taken if taken is not None else set()
    if preferred and preferred not in taken and _port_free(preferred, udp_too):
        taken.add(preferred)
        return preferred
    for _ in range(200):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((HOST, 0))
            port = int(s.getsockname()[1])
        if port not in taken and _port_free(port, udp_too):
            taken.add(port)
            return port
    raise OSError("no free port found on 127.0.0.1")


# --------------------------------------------------------------------------- nodes


async def start_node(
    base: Path,
    key: str,
    name: str,
    role: str,
    prefix: str,
    secret: str,
    *,
    ports: tuple[int, int, int] = (0, 0, 0),
    taken: set[int] | None = None,
    replication: ReplicationConfig | None = None,
    federation: FederationSettings | None = None,
    hold_reports: bool = False,
) -> RunningNode:
    """Initialise (first time) and start one node on 127.0.0.1 with native, HTTP and HTTPS,
    exactly as ``idr init`` + ``idr serve`` would: its settings go to its data directory
    (``idr.toml``; ``replication`` as one site of a replicated service; ``federation`` as its
    ``federation.toml``) and :class:`idr.node.Node` assembles it from there. ``hold_reports``:
    its statistics reports wait until its hub is released (``StatsHub.held``)."""
    from idr.cli.node import init_node

    taken = taken if taken is not None else set()
    native = pick_port(ports[0], udp_too=True, taken=taken)
    http = pick_port(ports[1], taken=taken)
    https = pick_port(ports[2], taken=taken)
    data = base / key
    addr = {"https": f"{HOST}:{https}", "http": f"{HOST}:{http}", "native": f"{HOST}:{native}"}
    if not (data / "idr.toml").exists():
        recursive = role == "recursive"  # holds nothing: no prefix, no admin key
        init_node(
            data,
            "" if recursive else prefix,
            secret=None if recursive else secret,
            role=role,
            https=addr["https"],
            http=addr["http"],
            native=addr["native"],
            root=federation.root if federation is not None and recursive else (),
        )
    cfg = NodeConfig.load(data)
    cfg.name = name
    cfg.https, cfg.http, cfg.native = addr["https"], addr["http"], addr["native"]
    if replication is not None:
        cfg.replication = replication
    cfg.save()  # so `idr serve --data` restarts the node as what it is
    if federation is not None:
        federation.save(data)
    node = Node(cfg)
    node.hold_reports = hold_reports
    try:
        await node.start()
    except BaseException:
        await node.stop()
        node.close()
        raise
    ls = node.listeners
    assert ls.native and ls.http and ls.https and node.service.site_info is not None
    site = node.service.site_info
    return RunningNode(key, name, role, prefix, secret, node, site, ls.native, ls.http, ls.https)


async def publish_prefix(
    parent: RunningNode,
    prefix: str,
    sites: Sequence[SiteInfo],
    *,
    admin_secret: str | None = None,
    derived: bool = False,
    actor: ValueReference | None = None,
) -> None:
    """Write ``0.NA/<prefix>`` at ``parent``: where ``prefix`` lives (HS_SITE; with ``derived``
    its derived prefix handles too, HS_SITE.PREFIX), and its admin (``300:0.NA/<prefix>``)."""
    ph = prefix_handle(prefix)
    values = [
        HandleValue(100, "HS_ADMIN", encode_admin(AdminRecord(ph, 300, int(AdminPermission.ALL)))),
        *delegation_values(sites, derived=derived),
    ]
    if admin_secret is not None:
        values.append(HandleValue(300, "HS_SECKEY", admin_secret.encode(), permissions=PERM_SECRET))
    req = Request(Op.CREATE_HANDLE, ph, values=tuple(values), identity=actor or parent.admin, overwrite=True)
    resp = await parent.service.submit(req)
    if not resp.ok:
        raise RuntimeError(f"publishing {ph} at {parent.name}: {resp.code.name} {resp.message}")


async def register(
    node: RunningNode,
    handle: str,
    values: Sequence[tuple[int, str, str]],
    identity: ValueReference | None = None,
) -> None:
    """Create (or overwrite) ``handle`` at ``node`` as ``identity`` (default: its prefix's admin)."""
    vals = tuple(HandleValue(i, t, d.encode("utf-8")) for i, t, d in values)
    prefix = handle.partition("/")[0]
    identity = identity or ValueReference(prefix_handle(prefix), 300)
    req = Request(Op.CREATE_HANDLE, handle, values=vals, identity=identity, overwrite=True)
    resp = await node.service.submit(req)
    if not resp.ok:
        raise RuntimeError(f"registering {handle} at {node.name}: {resp.code.name} {resp.message}")


# --------------------------------------------------------------------------- the federation


VEHICLE = "88.118.8/VIN-LS5A3DKE0RA000001"
PACK = "88.168.2/PACK-2024-YB-000117"
CELL = "88.168.6/CELL-2024-YB-0001523"
CELL2 = "88.168.6/CELL-2024-YB-0001524"

# The Yibin cell's other names. The GS1 company prefix 6975310 is made up (in GS1 China's
# 690–699 range); the GTIN's check digit is right. Ecode V1: NSI 3206, master data code.
YIBIN_GCP = "6975310"
CELL_GTIN = "06975310001525"
CELL_SERIAL = "YB0001523"
CELL_DL_PATH = f"/01/{CELL_GTIN}/21/{CELL_SERIAL}"
CELL_ELEMENT_STRING = f"(01){CELL_GTIN}(21){CELL_SERIAL}"
CELL_ECODE = "13206202407180001523"
YIBIN_GS1_PREFIX = f"GS1.{YIBIN_GCP}"
YIBIN_ECODE_PREFIX = "ECODE.1.3206"
CELL_GS1_HANDLE = f"{YIBIN_GS1_PREFIX}{CELL_DL_PATH}"
CELL_ECODE_HANDLE = f"{YIBIN_ECODE_PREFIX}/{CELL_ECODE}"

YIBIN_USCC = "91511500MA62XB4P3L"  # illustrative; valid check character
PACK_USCC = "91511500MA64K8Q21C"
VEHICLE_USCC = "91500000MA5U7AJF01"


def _replication_secret(base: Path) -> str:
    from idr.core.secret_policy import generate_link_secret, link_secret_problem

    with contextlib.suppress(ConfigError, OSError):
        kept = NodeConfig.load(base / "top-cq").replication.secret
        if kept and link_secret_problem(kept) is None:
            return kept
    return generate_link_secret()


@dataclass
class Federation:
    """The running twin-city federation (stop with :meth:`stop`)."""

    base: Path
    nodes: dict[str, RunningNode] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> RunningNode:
        return self.nodes[key]

    async def stop(self) -> None:
        for n in reversed(list(self.nodes.values())):
            with contextlib.suppress(Exception):
                await n.node.stop()
        for n in reversed(list(self.nodes.values())):
            with contextlib.suppress(Exception):
                n.node.close()
        self.nodes.clear()


NODES = (
    # key, name, role, prefix, secret
    ("top-cq", "Chongqing top-level node (primary)", "top", "0.NA", TOP_SECRET),
    ("top-cd", "Chengdu top-level node (mirror)", "top", "0.NA", TOP_SECRET),
    ("sec-cq", "Chongqing automotive secondary node", "secondary", "88.118", "cq-auto-secret"),
    ("sec-sc", "Sichuan battery & electronics secondary node", "secondary", "88.168", "sc-battery-secret"),
    ("ent-cq", "Chongqing vehicle maker enterprise node", "enterprise", "88.118.8", "cq-vehicle-secret"),
    ("ent-yb", "Yibin battery cell plant enterprise node", "enterprise", "88.168.6", "yibin-cell-secret"),
)


async def start_federation(base: Path, *, base_port: int = 0, load: bool = True) -> Federation:
    """Start the seven nodes; with ``load``, run the Yibin prefix lifecycle and the supply chain.

    ``base_port`` 0 uses ephemeral ports everywhere (tests); the demo asks for its fixed block
    (node *i*: native ``base+10i``, HTTP ``+1``, HTTPS ``+2``; the top's sites replicate on ``+3``).
    Each node is configured through its data directory (idr.toml, federation.toml) and
    assembled by :class:`idr.node.Node`, as ``idr serve`` would; the rest is data: the top
    publishes its sites and the secondary prefixes, prefixes go through their lifecycle.
    """
    fed = Federation(base)
    taken: set[int] = set()

    def block(i: int) -> tuple[int, int, int]:
        b = base_port + 10 * i
        if not base_port:
            b = 0
        return (
            pick_port(b, udp_too=True, taken=taken),
            pick_port(b + 1 if b else 0, taken=taken),
            pick_port(b + 2 if b else 0, taken=taken),
        )

    # Every node's ports first: each node's settings name the others' (the top's two sites
    # are the federation's root; the secondaries file with the primary's HTTPS API).
    ports = {key: block(i) for i, (key, *_rest) in enumerate(NODES)}
    ports["recursive"] = block(len(NODES))
    # One top, one backup: the two sites of the top service replicate to each other.
    repl = {
        key: f"{HOST}:{pick_port(base_port + 10 * i + 3 if base_port else 0, taken=taken)}"
        for i, key in enumerate(("top-cq", "top-cd"))
    }
    root = [f"{HOST}:{ports['top-cq'][0]}", f"{HOST}:{ports['top-cd'][0]}"]
    root_names = [NODES[0][1], NODES[1][1]]
    top_https = f"https://{HOST}:{ports['top-cq'][2]}"
    top_cert = base / "top-cq" / "tls" / "cert.pem"
    # The top's two sites share a generated replication key (kept if this data was run before).
    repl_secret = _replication_secret(base)
    try:
        for key, name, role, prefix, secret in NODES:
            replication = None
            if key in repl:
                replication = ReplicationConfig(
                    listen=repl[key],
                    peers=[a for k, a in repl.items() if k != key],
                    secret=repl_secret,
                    mode="sync",
                    role="primary" if key == "top-cq" else "mirror",
                )
            # Where the top is; a secondary files as its prefix's admin (300:0.NA/<prefix>),
            # the identity the top holds on 0.NA/<prefix>.
            federation = FederationSettings(root=root, root_names=root_names)
            federation.report_interval = DEMO_REPORT_INTERVAL
            if role == "secondary":
                federation.top_url = top_https
                federation.top_identity = f"300:{prefix_handle(prefix)}"
                federation.top_secret = secret
                federation.top_cafile = str(top_cert)
            if role == "enterprise":
                # 数据上报 to its secondary, as its prefix's admin (the key it holds itself).
                parent = next(k for k, _, r, p, _ in NODES if r == "secondary" and prefix.startswith(p + "."))
                federation.parent_url = f"https://{HOST}:{ports[parent][2]}"
                federation.parent_cafile = str(base / parent / "tls" / "cert.pem")
            fed.nodes[key] = await start_node(
                base,
                key,
                name,
                role,
                prefix,
                secret,
                ports=ports[key],  # picked above (free, and in ``taken``)
                replication=replication,
                federation=federation,
                # a child reports once its parent holds its prefix (below), not refused before
                hold_reports=role in ("secondary", "enterprise"),
            )
            if key == "top-cd":
                # Sync mode acknowledges a write only once the mirror holds it: wait for the link.
                primary = fed["top-cq"]
                why = "the Chengdu mirror did not connect to Chongqing"
                await _until(lambda: _mirrors(primary) >= 1, 30.0, why)  # noqa: B023 (awaited at once)
        top, mirror = fed["top-cq"], fed["top-cd"]
        # The recursive node: nothing of its own, the top's two sites as its root.
        fed.nodes["recursive"] = await start_node(
            base,
            "recursive",
            "Public recursive node",
            "recursive",
            "",
            "",
            ports=ports["recursive"],
            federation=FederationSettings(root=root, root_names=root_names),
        )
        # Written once, at the primary; the mirror gets every record by log shipping.
        # The top service names both its sites (0.NA/0.NA HS_SITE), so clients and the console
        # learn the mirror from the data; the top knows the two secondaries and hands them
        # their derived prefix handles; each secondary's admin can authenticate to file.
        await publish_service_sites(top, [top.site, mirror.site])
        for sec in (fed["sec-cq"], fed["sec-sc"]):
            await publish_prefix(top, sec.prefix, [sec.site], admin_secret=sec.secret, derived=True)
        if load:
            await _lifecycle_and_chain(fed)
        children = ("ent-cq", "ent-yb") if load else ()
        await _release_reports(fed, (*children, "sec-cq", "sec-sc"))
        await _until(
            lambda: mirror.service.store.last_seq() >= top.service.store.last_seq(),
            30.0,
            "the Chengdu mirror did not catch up with Chongqing",
        )
    except BaseException:
        await fed.stop()
        raise
    return fed


async def _release_reports(fed: Federation, keys: Sequence[str]) -> None:
    """Children whose parents now hold their prefixes report, bottom up, now and on schedule
    (an enterprise node's prefix exists at its secondary only after the lifecycle)."""
    for key in keys:
        hub = fed[key].node.stats_hub
        if hub is not None:
            hub.held = False
            await hub.report_now()


def _mirrors(site: RunningNode) -> int:
    rep = site.node.replicator
    return int(rep.status()["mirrors"]) if rep is not None else 0


async def _until(ok: Callable[[], bool], seconds: float, why: str) -> None:
    """Wait (bounded) for ``ok()``; a federation that cannot get there fails to start, loudly."""
    import asyncio
    import time

    deadline = time.monotonic() + seconds
    while not ok():
        if time.monotonic() > deadline:
            raise RuntimeError(why)
        await asyncio.sleep(0.05)


async def publish_service_sites(node: RunningNode, sites: Sequence[SiteInfo]) -> None:
    """Add the service's own sites (primary first) to its prefix handle (``0.NA/0.NA`` for the
    top): how clients that know one site learn the others, as the GHR publishes its sites."""
    ph = prefix_handle(node.prefix)
    values = tuple(delegation_values(sites))
    req = Request(Op.ADD_VALUE, ph, values=values, identity=node.admin, overwrite=True)
    resp = await node.service.submit(req)
    if not resp.ok:
        raise RuntimeError(f"publishing the sites of {ph}: {resp.code.name} {resp.message}")


async def _lifecycle_and_chain(fed: Federation) -> None:
    sec_cq, sec_sc = fed["sec-cq"], fed["sec-sc"]
    # Yibin cell plant: apply → review → approve → file with the top → delegate to its node.
    reg_sc = PrefixRegistry(sec_sc.federated, "88.168")
    yb = await reg_sc.apply(
        enterprise="宜宾动力电池有限公司 (Yibin power battery cells)",
        uscc=YIBIN_USCC,
        contact="quality@yibin-cells.example",
        secret=fed["ent-yb"].secret,
        requested="88.168.6",
    )
    await reg_sc.approve(yb.id, sec_sc.admin)
    await _file(sec_sc, reg_sc, yb.id)
    await reg_sc.delegate("88.168.6", [fed["ent-yb"].site], sec_sc.admin)
    # The pack line has no node: its prefix stays at the Sichuan secondary.
    pk = await reg_sc.apply(
        enterprise="宜宾电池包装配线 (Yibin battery pack assembly)",
        uscc=PACK_USCC,
        contact="packs@yibin-cells.example",
        secret="yibin-pack-secret",
        requested="88.168.2",
    )
    await reg_sc.approve(pk.id, sec_sc.admin, site=sec_sc.site)
    await _file(sec_sc, reg_sc, pk.id)
    # The Chongqing vehicle maker: approved and filed the same way, delegated to its node.
    reg_cq = PrefixRegistry(sec_cq.federated, "88.118")
    vm = await reg_cq.apply(
        enterprise="重庆整车制造 (Chongqing vehicle assembly, Yubei)",
        uscc=VEHICLE_USCC,
        contact="trace@cq-vehicles.example",
        secret=fed["ent-cq"].secret,
        requested="88.118.8",
    )
    await reg_cq.approve(vm.id, sec_cq.admin)
    await _file(sec_cq, reg_cq, vm.id)
    await reg_cq.delegate("88.118.8", [fed["ent-cq"].site], sec_cq.admin)
    # The supply chain, each identifier at a different node, linked by references.
    claim = (TEMPLATE_INDEX, TEMPLATE_TYPE)
    for cell in (CELL, CELL2):
        await register(
            fed["ent-yb"],
            cell,
            [
                (1, "URL", f"https://yibin-cells.example/cells/{cell.partition('/')[2]}"),
                (2, "manufacturer", "宜宾动力电池有限公司"),
                (3, "model", "LFP-280Ah-prismatic"),
                (4, "chemistry", "LFP"),
                (5, "capacity_ah", "280"),
                (6, "production_date", "2024-07-18"),
                (7, "batch", "YB-2024-07-B03"),
                *([(8, "GS1_DIGITAL_LINK", CELL_DL_PATH), (9, "ECODE", CELL_ECODE)] if cell == CELL else []),
                (*claim, "battery-cell@1"),
            ],
        )
    await _scheme_names(fed)
    await register(
        sec_sc,
        PACK,
        [
            (1, "URL", "https://yibin-cells.example/packs/2024-YB-000117"),
            (2, "manufacturer", "宜宾电池包装配线"),
            (3, "model", "CTP-75kWh"),
            (4, "energy_kwh", "75"),
            (5, "cell_count", "96"),
            (6, "cell", CELL),
            (7, "cell", CELL2),
            (8, "production_date", "2024-07-25"),
            (*claim, "battery-pack@1"),
        ],
    )
    await register(
        fed["ent-cq"],
        VEHICLE,
        [
            (1, "URL", "https://cq-vehicles.example/vehicles/LS5A3DKE0RA000001"),
            (2, "vin", "LS5A3DKE0RA000001"),
            (3, "model", "Deepal SUV (illustrative)"),
            (4, "production_date", "2024-08-02"),
            (5, "battery_pack", PACK),
            (*claim, "vehicle@1"),
        ],
    )


async def _scheme_names(fed: Federation) -> None:
    """The cell's GS1 key and Ecode, delegated the way a federation delegates any prefix.

    GS1 China allocated the plant the company prefix 6975310 and the Ecode authority the
    number system 3206 (both illustrative). The top — the entry point of converged
    resolution — delegates ``GS1.6975310`` and ``ECODE.1.3206`` to the plant's node, as it
    delegates ``88.*`` prefixes; the plant homes them and registers each name as an alias of
    the cell's handle, so there is one record, whichever name is resolved.
    """
    top, yb = fed["top-cq"], fed["ent-yb"]
    for prefix in (YIBIN_GS1_PREFIX, YIBIN_ECODE_PREFIX):
        await publish_prefix(top, prefix, [yb.site], admin_secret=yb.secret)
        resp = await yb.service.submit(Request(Op.HOME_NA, prefix, identity=yb.admin))
        if not resp.ok:
            raise RuntimeError(f"homing {prefix} at {yb.name}: {resp.code.name} {resp.message}")
    for handle in (CELL_GS1_HANDLE, CELL_ECODE_HANDLE):
        await register(yb, handle, [(1, "HS_ALIAS", CELL)], identity=yb.admin)


async def _file(sec: RunningNode, reg: PrefixRegistry, app_id: str) -> None:
    """File with the top as the node's own federation context does (from its federation.toml)."""
    from idr.resolver.filing import file_prefix
    from idr.server.federation import FederationContext

    ctx = sec.federated.context
    target = ctx.filing_target if isinstance(ctx, FederationContext) else None
    if target is None:
        raise RuntimeError(f"{sec.name} has no top node to file with (federation.toml)")
    if not await file_prefix(reg, app_id, target):
        raise RuntimeError(f"filing {reg.get(app_id).prefix} failed: {reg.get(app_id).filing_error}")


__all__ = [
    "CELL",
    "CELL_DL_PATH",
    "CELL_ECODE",
    "CELL_ELEMENT_STRING",
    "PACK",
    "VEHICLE",
    "Federation",
    "RunningNode",
    "start_federation",
    "start_node",
]
