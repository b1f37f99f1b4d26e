"""A node's settings, kept as ``idr.toml`` in its data directory."""

from __future__ import annotations

import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import tomli_w

CONFIG_NAME = "idr.toml"
ROLES = ("standalone", "top", "secondary", "enterprise", "recursive")


class ConfigError(Exception):
    """The node's settings are missing or wrong; the message says which and where."""


@dataclass
class Limits:
    max_body_bytes: int = 1024 * 1024
    max_list_page: int = 10000
    cache_entries: int = 2_000_000


@dataclass
class NodeConfig:
    data_dir: Path
    admins: list[str] = field(default_factory=list)  # identities "index:handle" with every right
    role: str = "standalone"
    name: str = "idr node"
    store: str = "sqlite"
    https: str = "127.0.0.1:8443"
    http: str = ""
    native: str = ""
    limits: Limits = field(default_factory=Limits)

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
        try:
            cfg = cls(
                data_dir=Path(data_dir),
                admins=list(node.get("admins", [])),
                role=str(node.get("role", "standalone")),
                name=str(node.get("name", "idr node")),
                store=str(node.get("store", "sqlite")),
                https=str(listen.get("https", "127.0.0.1:8443")),
                http=str(listen.get("http", "")),
                native=str(listen.get("native", "")),
                limits=Limits(**limits),
            )
        except TypeError as e:
            raise ConfigError(f"{path}: {e}") from e
        if cfg.role not in ROLES:
            raise ConfigError(f"{path}: role must be one of {', '.join(ROLES)}, not {cfg.role!r}")
        return cfg

    def save(self) -> None:
        doc = {
            "node": {
                "name": self.name,
                "role": self.role,
                "admins": self.admins,
                "store": self.store,
            },
            "listen": {"https": self.https, "http": self.http, "native": self.native},
            "limits": asdict(self.limits),
        }
        self.data_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(tomli_w.dumps(doc), "utf-8")
        tmp.replace(self.path)
