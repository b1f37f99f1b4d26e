"""A node's settings, kept as ``idr.toml`` in its data directory."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomli_w

from idr.codec.values import MAX_RECORD_BYTES
from idr.private import make_private_dir, write_private

CONFIG_NAME = "idr.toml"
ROLES = ("standalone", "top", "secondary", "enterprise", "recursive")
# Clients whose resolution request shape ``[native] warm_shapes`` can name (idr.server.native's
# WARM_SHAPES, in this order): the Handle.Net 9 client, a plain RFC 3652 2.1 client, idr's own.
WARM_SHAPE_NAMES = ("handle.net", "rfc3652", "idr")


class ConfigError(Exception):
    """The node's settings are missing or wrong; the message says which and where."""


@dataclass
class Limits:
    max_body_bytes: int = 1024 * 1024
    max_list_page: int = 10000
    cache_entries: int = 2_000_000
    # Encoded bytes of one record's values together (every write path refuses more: INVALID_VALUE,
    # REST 400). At most the default, which keeps a resolution answer within one Handle message.
    max_record_bytes: int = MAX_RECORD_BYTES
    # Anonymous prefix applications waiting for review under one parent prefix (more: HTTP 429).
    max_pending_applications: int = 1000
    # Seconds between polls of the store's log for other writers' commits (idr.runtime.follow):
    # the bound on how long another process's write can go unseen by this node's caches.
    follow_interval: float = 0.01


@dataclass
class NativeLimits:
    """``[native]``: what one client may cost the Handle protocol front-ends (docs/security.md)."""

    udp_rate: int = 64 * 1024  # bytes/s of large UDP answers per source network (RRL budget)
    udp_burst: int = 256 * 1024
    udp_slip: int = 2  # past the budget, every n-th large answer becomes a TC header (0: none)
    udp_truncate: bool = False  # legacy: TC header for every answer too large to send freely
    tcp_max_connections: int = 1024
    tcp_max_per_source: int = 64
    tcp_idle_timeout: float = 30.0
    tcp_write_buffer: int = 64 * 1024  # per connection: stop answering while the client lags
    verify_slots: int = 1  # signature/MAC checks at once, off the event loop
    verify_queue: int = 16
    verify_cpu_per_source: float = 0.25  # CPU seconds of verification per second per address
    verify_cpu_burst: float = 1.0
    token_window: float = 300.0  # id-pointer-sdk identity tokens: seconds of clock skew allowed
    # Pre-encoded answers kept in memory (one per handle and request shape, ~600 bytes each):
    # room for every handle of a 1M-handle node in two shapes (idr.server.hotcache).
    answer_cache: int = 2_000_000
    # ``idr serve`` warms that cache at start (every handle's key, then every shape clients use)
    # in a helper process off the serving loop's core (idr.server.warmhelper) when true or with
    # ``--warm``; off by default: it did not make the first seconds faster on 2 cores (native.py
    # notes), so answers are spliced from the store on first use instead.
    warm: bool = False
    # With ``warm``: the request shapes of these clients are warmed for every handle at start,
    # before anyone asks (WARM_SHAPE_NAMES; other shapes are warmed when first used). A mirror
    # nobody asks before a failover needs them to answer at full speed once promoted
    # (bench/promote_resolve.py); each costs ~600 bytes of memory per handle.
    warm_shapes: list[str] = field(default_factory=list)
    # ``idr serve`` keeps that cache across restarts: written to native-answers.snap in the data
    # directory on a clean stop, loaded at start (idr.server.snapshot), minus every handle the
    # log shows changed meanwhile; discarded whole when anything else that shapes answers changed.
    snapshot: bool = True


@dataclass
class HttpLimits:
    """``[http]``: what one client may cost the HTTP front-ends — REST API, proxy, SNMS API,
    console, sessions API (docs/security.md)."""

    # Back-off for failed logins (console, Basic, Authorization: Handle, SNMS tokens).
    login_free_failures: int = 5  # failures per source / identity before any wait
    login_backoff_base: float = 1.0  # seconds; doubled with each further failure…
    login_source_max_delay: float = 900.0  # …up to this for one address
    login_identity_max_delay: float = 60.0  # …and this for one identity (never a lockout)
    login_forget_after: float = 3600.0  # failures forgotten this long after the last
    login_known_source_days: float = 30.0  # an address that logged in as an identity skips its back-off
    login_table_entries: int = 16384  # addresses and identities remembered (LRU)
    verify_slots: int = 1  # Authorization: Handle signature/MAC checks at once, off the event loop
    verify_queue: int = 16  # waiting beyond that; more get 503 at once
    sessions: int = 10_000  # Authorization: Handle sessions kept (anonymous and logged-in each)
    session_idle: float = 1800.0  # seconds
    console_sessions: int = 10_000  # console sessions kept (anonymous and logged-in each)
    max_walks: int = 4  # supply-chain traces across the federation at once (more: 503)
    walk_seconds: float = 10.0  # each within this
    # Connections (idr.server.http_connections), all HTTP(S) listeners of the node together.
    max_connections: int = 2048
    max_connections_per_source: int = 64  # one address (an IPv6 client's /64)
    request_timeout: float = 60.0  # a request received and its answer begun within this
    write_stall_timeout: float = 60.0  # a client that stops reading is closed after this
    keepalive_timeout: float = 75.0  # an idle keep-alive connection
    tls_handshake_timeout: float = 10.0
    tls_handshakes_per_second: float = 100.0  # per address after a burst (0: not paced); beyond: wait
    tls_handshake_burst: int = 200
    # Anonymous prefix applications (REST, console) from one source network (/24, IPv6 /56):
    # a burst of this many, then one per ``application_interval`` seconds (more: HTTP 429).
    applications_per_source: int = 5
    application_interval: float = 600.0


@dataclass
class ReplicationConfig:
    """``[replication]``: this site's part in its service (see docs/replication.md).

    ``role`` is only the role a node starts with the first time; afterwards the durable
    replication state (epoch, role) in the data directory decides, since promotion and
    fencing change it. ``listen`` empty means replication is off.
    """

    listen: str = ""  # replication TCP address of this site
    peers: list[str] = field(default_factory=list)  # replication addresses of the other sites
    secret: str = ""  # shared by every site of the service; never sent over the wire
    mode: str = "sync"  # sync | async
    role: str = "primary"  # primary | mirror (first start only)
    ack_timeout: float = 5.0  # sync: seconds a write waits for a mirror before it fails
    auto_promote_after: float = 0.0  # mirror: promote itself after the primary is gone this long (0 = off)


SEARCH_ACCESS = ("anonymous", "authenticated", "admins")
SEARCH_INDEX = ("full", "exact", "off")


@dataclass
class SearchConfig:
    """``[search]``: reverse lookup (``/hrls/handles``, docs/search.md).

    ``access``: who may search — ``anonymous`` (anyone), ``authenticated`` (any identity that
    authenticates to this node; the default, as Handle.Net's reverse-lookup service sits
    behind a login), ``admins`` (the node's admins only). ``index``: ``full`` (exact, prefix
    and substring patterns indexed), ``exact`` (exact and prefix only: less disk, substring
    patterns scan the type's values) or ``off``; the store is rebuilt to it when it starts.
    """

    access: str = "authenticated"
    index: str = "full"


@dataclass
class TrustConfig:
    """``[trust]``: record signatures (docs/signatures.md). ``roots``: files with the public
    keys a signature chain may end at (PEM or HS_PUBKEY bytes; relative to the data directory).
    A recursive node with roots checks every signed record it resolves and reports the result
    (``/api/federation/resolve``); with ``enforce`` a record whose check fails is answered as
    an error naming what failed, on every front-end."""

    roots: list[str] = field(default_factory=list)
    enforce: bool = False


@dataclass
class RecursiveConfig:
    """``[recursive]``: a recursive node's caches (docs/scale.md). ``answers``: whole answers,
    ~0.75 KiB each for a one-value record and ~1.2 KiB for three (measured with their keys; the
    front-ends keep a pre-encoded copy of those asked for besides); ``services``: prefixes and the
    sites serving them, ~215 B each (the decoded sites are shared by the prefixes one node
    serves); ``missing_prefixes``: prefixes the federation said do not exist, kept for
    ``negative_ttl`` seconds as answers that were not found are. Under a Zipf(1.1) load over
    40,000 prefixes × 100 identifiers the 250,000 most asked answers are ~91 % of the requests."""

    answers: int = 250_000
    services: int = 100_000  # the seeds' 40,000+ enterprise prefixes, with room to grow
    missing_prefixes: int = 10_000
    negative_ttl: float = 30.0

    def check(self, where: str) -> None:
        if min(self.answers, self.services, self.missing_prefixes) < 0 or self.negative_ttl < 0:
            raise ConfigError(f"{where}: [recursive] cache sizes and negative_ttl are 0 or more")


@dataclass
class SiteConfig:
    """``[site]``: this server's part in a site of several servers (``idr.core.site``;
    docs/sites.md). Without it, or with one server, the node is a site of its own."""

    # Every server of the site in HS_SITE order (the hash depends on it, and on their number):
    # "HOST:PORT[,http=P][,https=P],link=P" — native, HTTP, HTTPS and site-link addresses.
    servers: list[str] = field(default_factory=list)
    index: int = 0  # this server's place in ``servers`` (0-based)
    hash: str = "whole"  # what the hash reads: whole handle (Handle.Net's default), prefix, suffix
    secret: str = ""  # the site link's key: the same on every server of the site, never sent
    serial: int = 1  # HS_SITE serial: raise it when the servers change
    peer_ttl: float = 5.0  # seconds a record read from another server of the site is used
    relay_native: bool = False  # relay native requests too (while clients hold an older HS_SITE)
    link_timeout: float = 2.0  # seconds to reach another server of the site

    @property
    def multi(self) -> bool:
        return len(self.servers) > 1

    def check(self, where: str) -> None:
        """Raise ConfigError naming what is wrong (``where``: the file)."""
        from idr.core.secret_policy import link_secret_problem
        from idr.core.site import HASH_OPTIONS, ServerSpec, SpecError

        if not self.multi:
            return
        if not 0 <= self.index < len(self.servers):
            raise ConfigError(f"{where}: [site] index {self.index} is not one of 0…{len(self.servers) - 1}")
        try:
            specs = [ServerSpec.parse(t) for t in self.servers]
        except SpecError as e:
            raise ConfigError(f"{where}: [site] servers: {e}") from e
        if any(not spec.link for spec in specs):
            raise ConfigError(f"{where}: [site] every server needs link=PORT (the site link)")
        if self.hash not in HASH_OPTIONS:
            raise ConfigError(f"{where}: [site] hash is one of {', '.join(HASH_OPTIONS)}, not {self.hash!r}")
        problem = link_secret_problem(self.secret) if self.secret else "it is missing"
        if problem is not None:
            raise ConfigError(f"{where}: [site] secret (the site link's key): {problem}")


@dataclass
class LogRetention:
    """``[log]``: how much transaction log the node keeps (idr.operations.compaction). An entry
    goes once it is older than ``retain_days`` AND not among the newest ``retain_entries``, and
    never while a connected mirror still needs it; a mirror further behind is re-copied."""

    retain_entries: int = 1_000_000  # the newest entries always kept (0: none by count)
    retain_days: float = 30.0  # entries younger than this always kept (0: none by age)
    compact_every: float = 60.0  # seconds between compactions (0: never; the log grows forever)
    batch: int = 5000  # entries deleted per transaction (short write locks)


@dataclass
class LoggingConfig:
    """``[logging]``: see idr.operations.logs (reloaded on SIGHUP but for switching ``access``)."""

    level: str = "info"  # of the ``idr`` loggers: debug | info | warning | error
    levels: dict[str, str] = field(default_factory=dict)  # per logger, e.g. {"idr.replication" = "debug"}
    file: str = ""  # event/error log (relative to the data directory); "" = stderr
    format: str = "auto"  # auto (json to a file, text to stderr) | json | text
    access: str = "logs/access.log"  # access log, JSON lines; "" = off
    rotate_bytes: int = 100 * 1024 * 1024  # rotate a log at this size (0 = never by size)
    rotate_when: str = ""  # or by time instead: "midnight", "H", … (TimedRotatingFileHandler)
    backups: int = 10  # rotated files kept
    flush_interval: float = 0.2  # seconds between access-log writes


@dataclass
class TlsConfig:
    """``[tls]``: the HTTPS listener's certificate (reloaded on SIGHUP). Empty ``cert``/``key``:
    the self-signed pair generated in ``<data>/tls``. ``ca``: CA certificates to verify client
    certificates with (``client_certs`` optional: asked for, checked when given; required:
    refused without one)."""

    cert: str = ""
    key: str = ""
    ca: str = ""
    client_certs: str = "optional"  # with ca: optional | required


@dataclass
class NodeConfig:
    data_dir: Path
    admins: list[str] = field(default_factory=list)  # identities "index:handle" with every right
    role: str = "standalone"
    name: str = "idr node"
    store: str = "sqlite"
    dsn: str = ""  # store = "postgres": libpq connection string (keep passwords in ~/.pgpass)
    # store = "postgres": the database is a hot standby (read-only; writes go to the primary site)
    standby: bool = False
    https: str = "127.0.0.1:8443"
    http: str = ""
    native: str = ""
    limits: Limits = field(default_factory=Limits)
    native_limits: NativeLimits = field(default_factory=NativeLimits)
    http_limits: HttpLimits = field(default_factory=HttpLimits)
    replication: ReplicationConfig = field(default_factory=ReplicationConfig)
    site: SiteConfig = field(default_factory=SiteConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
    log: LogRetention = field(default_factory=LogRetention)
    tls: TlsConfig = field(default_factory=TlsConfig)
    search: SearchConfig = field(default_factory=SearchConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    recursive: RecursiveConfig = field(default_factory=RecursiveConfig)

    @property
    def path(self) -> Path:
        return self.data_dir / CONFIG_NAME

    @property
    def db_path(self) -> Path:
        return self.data_dir / "idr.sqlite3"

    @classmethod
    def load(cls, data_dir: Path) -> NodeConfig:
        path = Path(data_dir) / CONFIG_NAME
        try:
            raw = tomllib.loads(path.read_text("utf-8"))
        except FileNotFoundError as e:
            raise ConfigError(f"{path} not found: run 'idr init --data {data_dir} …' first") from e
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from e
        node = raw.get("node", {})
        listen = raw.get("listen", {})
        limits = raw.get("limits", {})
        native_limits = raw.get("native", {})
        http_limits = raw.get("http", {})
        replication = raw.get("replication", {})
        site = raw.get("site", {})
        logging_ = raw.get("logging", {})
        log_retention = raw.get("log", {})
        tls = raw.get("tls", {})
        search = raw.get("search", {})
        trust = raw.get("trust", {})
        recursive = raw.get("recursive", {})
        try:
            cfg = cls(
                data_dir=Path(data_dir),
                admins=list(node.get("admins", [])),
                role=str(node.get("role", "standalone")),
                name=str(node.get("name", "idr node")),
                store=str(node.get("store", "sqlite")),
                dsn=str(node.get("dsn", "")),
                standby=bool(node.get("standby", False)),
                https=str(listen.get("https", "127.0.0.1:8443")),
                http=str(listen.get("http", "")),
                native=str(listen.get("native", "")),
                limits=Limits(**limits),
                native_limits=NativeLimits(**native_limits),
                http_limits=HttpLimits(**http_limits),
                replication=ReplicationConfig(**replication),
                site=SiteConfig(**site),
                logging=LoggingConfig(**logging_),
                log=LogRetention(**log_retention),
                tls=TlsConfig(**tls),
                search=SearchConfig(**search),
                trust=TrustConfig(**trust),
                recursive=RecursiveConfig(**recursive),
            )
        except TypeError as e:
            raise ConfigError(f"{path}: {e}") from e
        if cfg.replication.mode not in ("sync", "async"):
            raise ConfigError(f"{path}: replication mode must be sync or async, not {cfg.replication.mode!r}")
        if cfg.replication.role not in ("primary", "mirror"):
            raise ConfigError(f"{path}: replication role must be primary or mirror")
        if cfg.store not in ("sqlite", "postgres"):
            raise ConfigError(f"{path}: store must be sqlite or postgres, not {cfg.store!r}")
        if cfg.standby and cfg.store != "postgres":
            raise ConfigError(f"{path}: standby = true is for a PostgreSQL hot standby (store = 'postgres')")
        if cfg.store == "postgres" and not cfg.dsn:
            raise ConfigError(f"{path}: store = 'postgres' needs dsn = '…' (a libpq connection string)")
        cfg.site.check(str(path))
        cfg.recursive.check(str(path))
        if cfg.site.multi and cfg.role == "recursive":
            raise ConfigError(f"{path}: a recursive node holds nothing to spread over a site: remove [site]")
        if min(cfg.log.retain_entries, cfg.log.retain_days, cfg.log.compact_every) < 0 or cfg.log.batch < 1:
            raise ConfigError(f"{path}: [log] retention settings are 0 or more (batch at least 1)")
        if cfg.tls.client_certs not in ("optional", "required"):
            raise ConfigError(f"{path}: [tls] client_certs must be optional or required")
        if bool(cfg.tls.cert) != bool(cfg.tls.key):
            raise ConfigError(f"{path}: [tls] give both cert and key (or neither: self-signed)")
        if not 1024 <= cfg.limits.max_record_bytes <= MAX_RECORD_BYTES:
            raise ConfigError(
                f"{path}: [limits] max_record_bytes must be 1024..{MAX_RECORD_BYTES} "
                "(a larger record's answer would not fit one Handle message)"
            )
        if cfg.search.access not in SEARCH_ACCESS:
            raise ConfigError(
                f"{path}: [search] access must be one of {', '.join(SEARCH_ACCESS)}, "
                f"not {cfg.search.access!r}"
            )
        if cfg.search.index not in SEARCH_INDEX:
            raise ConfigError(
                f"{path}: [search] index must be one of {', '.join(SEARCH_INDEX)}, not {cfg.search.index!r}"
            )
        if cfg.role not in ROLES:
            raise ConfigError(f"{path}: role must be one of {', '.join(ROLES)}, not {cfg.role!r}")
        shapes = cfg.native_limits.warm_shapes
        if not isinstance(shapes, list) or any(n not in WARM_SHAPE_NAMES for n in shapes):
            raise ConfigError(
                f"{path}: [native] warm_shapes is a list of some of "
                f"{', '.join(map(repr, WARM_SHAPE_NAMES))}, not {shapes!r}"
            )
        return cfg

    def save(self) -> None:
        doc = {
            "node": {
                "name": self.name,
                "role": self.role,
                "admins": self.admins,
                "store": self.store,
                **({"dsn": self.dsn} if self.dsn else {}),
                **({"standby": True} if self.standby else {}),
            },
            "listen": {"https": self.https, "http": self.http, "native": self.native},
            "limits": asdict(self.limits),
            "native": asdict(self.native_limits),
            "http": asdict(self.http_limits),
            "logging": asdict(self.logging),
            "log": asdict(self.log),
            "search": asdict(self.search),
            **({"trust": asdict(self.trust)} if self.trust.roots else {}),
            **({"recursive": asdict(self.recursive)} if self.role == "recursive" else {}),
        }
        if self.tls != TlsConfig():
            doc["tls"] = asdict(self.tls)
        if self.replication.listen:
            doc["replication"] = asdict(self.replication)
        if self.site.multi:
            doc["site"] = asdict(self.site)
        # It holds the replication key: the directory and the file are the node user's alone.
        make_private_dir(self.data_dir)
        write_private(self.path, tomli_w.dumps(doc).encode("utf-8"))
