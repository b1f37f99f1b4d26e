"""Reload on SIGHUP: re-read idr.toml and apply what can change while the node serves.

Reloaded in place:
* ``[logging]`` levels, destinations and rotation (not switching the access log on or off);
* the HTTPS certificate and key (``[tls]`` cert/key, or the files at those paths renewed on
  disk): new handshakes present the new pair, open connections keep theirs;
* ``[limits] max_body_bytes`` of the HTTP listeners;
* ``[log]`` retention (read by the compactor at each run);
* ``<data>/templates``: new templates and new versions are published (``Node.reload_hooks``);
  a file that does not load keeps the published set as it was.

Everything else — listen addresses, role, store, admins, replication, ``[native]``,
``[http]``, ``[search]``, ``[trust]``, ``[tls]`` ca and client_certs, the other ``[limits]``,
and any setting added later unless it is listed here as live — takes effect at the next
restart; a reload says so in the log (one warning per setting) and in its report. A reload
that cannot read idr.toml, or whose certificate does not load, keeps everything as it was and
logs why: a typo never takes a serving node down.
"""

from __future__ import annotations

import logging
import signal
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING, Any

from idr.core.config import ConfigError, NodeConfig

if TYPE_CHECKING:
    from idr.node import Node

log = logging.getLogger("idr.reload")

# Settings applied by a reload (field by field for [limits] and [tls]); every other setting of
# NodeConfig is read at start only, new ones included until they are made live here.
_LIVE = frozenset({"data_dir", "logging", "log"})
_BY_FIELD = frozenset({"limits", "tls"})
_LIMITS_LIVE = frozenset({"max_body_bytes"})
_TLS_LIVE = frozenset({"cert", "key"})


@dataclass
class ReloadReport:
    applied: list[str] = field(default_factory=list)
    needs_restart: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"applied": self.applied, "needs_restart": self.needs_restart, "errors": self.errors}


def _changed_at_start(old: NodeConfig, new: NodeConfig) -> list[str]:
    out = []
    for f in fields(NodeConfig):
        before, after = getattr(old, f.name), getattr(new, f.name)
        if f.name in _LIVE or before == after:
            continue
        if f.name not in _BY_FIELD:
            out.append(f.name)
            continue
        live = _LIMITS_LIVE if f.name == "limits" else _TLS_LIVE
        out += [
            f"{f.name}.{g.name}"
            for g in fields(before)
            if g.name not in live and getattr(before, g.name) != getattr(after, g.name)
        ]
    return out


def _reload_tls(node: Node, new: NodeConfig) -> str:
    from idr.node import tls_files
    from idr.server.tls import ensure_certificate, reload_certificate

    assert node.tls_context is not None
    cert, key, _ = tls_files(new)
    if cert is None or key is None:
        cert, key = ensure_certificate(new.data_dir)
    reload_certificate(node.tls_context, cert, key)
    return f"tls certificate ({cert})"


def _reload_limits(node: Node, new: NodeConfig) -> list[str]:
    from idr.server.http import SETTINGS_KEY

    if new.limits.max_body_bytes == node.config.limits.max_body_bytes:
        return []
    for app in node.http_apps:
        app[SETTINGS_KEY]["max_body"] = new.limits.max_body_bytes
        app._client_max_size = new.limits.max_body_bytes  # what aiohttp reads per request
    return ["limits.max_body_bytes"]


async def reload_node(node: Node) -> ReloadReport:
    report = ReloadReport()
    try:
        new = NodeConfig.load(node.config.data_dir)
        if node.log_setup is not None:
            from idr.operations.logs import validate

            validate(new.logging)
    except ConfigError as e:
        report.errors.append(str(e))
        log.error("reload refused, settings unchanged: %s", e, extra={"config": str(node.config.path)})
        return report
    old = node.config
    if node.tls_context is not None:
        try:
            report.applied.append(_reload_tls(node, new))
        except (OSError, ValueError) as e:  # ssl.SSLError is an OSError
            report.errors.append(f"tls: {e}")
            log.error("reload: the certificate did not load, the old one stays: %s", e)
    if node.log_setup is not None:
        report.needs_restart += node.log_setup.apply(new.logging)
        report.applied.append("logging")
        log.debug("reload: idr loggers at level %s", new.logging.level)  # shows only once it took
    report.applied += _reload_limits(node, new)
    if new.log != old.log:
        report.applied.append("log retention")  # the compactor reads node.config at each run
    for hook in node.reload_hooks:
        name = getattr(hook, "__name__", str(hook)).removeprefix("_reload_")
        try:
            report.applied += hook(new)
        except Exception as e:  # a hook's failure must not stop the others or the node
            report.errors.append(f"{name}: {e}")
            log.exception("reload: %s unchanged: %s", name, e, extra={"hook": name})
    report.needs_restart += _changed_at_start(old, new)
    for name in report.needs_restart:
        log.warning("reload: %s changed in idr.toml; it takes effect at the next restart", name,
                    extra={"setting": name})  # fmt: skip
    node.config = new
    if node.worker_procs is not None:
        node.worker_procs.signal(signal.SIGHUP)
    log.info("reloaded: %s", ", ".join(report.applied) or "nothing", extra=report.as_dict())
    return report
