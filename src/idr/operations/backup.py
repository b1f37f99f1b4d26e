"""Online backup and restore of a node: ``idr backup --data DIR OUT``, ``idr restore OUT --data DIR``.

A backup is a directory: the store as of one consistent point, the node's other files
(``idr.toml``, TLS pair, replication state, federation settings…) and ``backup.json``, which
names the store's **log position** — the sequence number of the newest transaction in the
copy — and a SHA-256 of every file, checked again at restore.

* **SQLite**: SQLite's online backup API (``sqlite3.Connection.backup``) in one step, from a
  connection of its own: one read transaction, so the copy is exactly the database as of one
  commit — every transaction wholly in or wholly out — while the node keeps writing (WAL
  readers never block the writer). The log position is read from the copy itself.
* **PostgreSQL**: ``pg_dump`` (custom format) inside a snapshot exported by a REPEATABLE READ
  transaction of ours, from which the log position is read: dump and position describe the
  same instant. Sequence numbers commit in order (``txseq`` is row-locked to COMMIT), so the
  snapshot holds every entry up to its position and none after it.

Restore brings the copy into an empty data directory (PostgreSQL: into the database named by
the backed-up ``idr.toml`` or ``--dsn``, which must hold no idr store). A restored **primary**
starts a new replication epoch whose log begins after the backup's position, the way a
PostgreSQL point-in-time recovery starts a new timeline: a mirror that is behind the backup
continues from its log; one that holds entries the backup lacks (written after it) no longer
matches the primary's history and is re-copied (a snapshot). Those later entries are gone with
the primary that wrote them — when a mirror still has them, promote it instead
(``idr promote``); restore says so.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import orjson

from idr import __version__
from idr.core.config import CONFIG_NAME, ConfigError, NodeConfig

MANIFEST = "backup.json"
FORMAT = "idr-backup"
VERSION = 1
SQLITE_FILE = "idr.sqlite3"
PG_DUMP_FILE = "idr.pgdump"
# Never copied from the data directory: the live store's files (copied through the store's own
# backup instead), earlier backups and logs.
_SKIP_SUFFIXES = ("-wal", "-shm", "-journal")
_SKIP_DIRS = ("backups", "logs")


class BackupError(Exception):
    """The backup or restore could not be made; nothing half-made is left in its place."""


@dataclass
class Manifest:
    store: str  # sqlite | postgres
    seq: int  # log position: the newest transaction in the copy
    created: str  # ISO 8601, UTC
    node: str
    idr: str = __version__
    format: str = FORMAT
    version: int = VERSION
    seconds: float = 0.0  # how long the store's copy took
    files: dict[str, str] = field(default_factory=dict)  # relative path → sha256

    def save(self, directory: Path) -> None:
        _write_durably(directory / MANIFEST, orjson.dumps(asdict(self), option=orjson.OPT_INDENT_2))

    @classmethod
    def load(cls, directory: Path) -> Manifest:
        path = directory / MANIFEST
        try:
            raw = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            raise BackupError(f"{directory} is not an idr backup (no {MANIFEST})") from None
        except orjson.JSONDecodeError as e:
            raise BackupError(f"{path}: {e}") from e
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise BackupError(f"{path} is not an idr backup manifest")
        if raw.get("version") != VERSION:
            found = raw.get("version")
            raise BackupError(f"{path}: backup format version {found!r}; this idr reads {VERSION}")
        try:
            return cls(**raw)
        except TypeError as e:
            raise BackupError(f"{path}: {e}") from e


# --------------------------------------------------------------------------- helpers


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(path)
    _fsync_dir(path.parent)


def _node_files(data_dir: Path, db_name: str) -> Iterator[Path]:
    """Every file of the node but the live store's (relative paths)."""
    for root, dirs, files in os.walk(data_dir):
        rel_root = Path(root).relative_to(data_dir)
        if rel_root == Path("."):
            dirs[:] = [d for d in dirs if d not in _SKIP_DIRS]
        for name in files:
            rel = rel_root / name
            store_file = name == db_name or (name.startswith(db_name) and name.endswith(_SKIP_SUFFIXES))
            if rel_root == Path(".") and store_file:
                continue
            if name.endswith(".tmp"):
                continue
            yield rel


def _prepare_out(out: Path) -> Path:
    """``out`` must not exist (or be an empty directory); the backup is built beside it and
    renamed into place only once complete."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise BackupError(f"{out} already exists and is not empty: give a new directory")
    out.parent.mkdir(parents=True, exist_ok=True)
    work = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(mode=0o700)
    return work


# --------------------------------------------------------------------------- engines


def sqlite_copy(db: Path, dest: Path) -> int:
    """Copy the SQLite store ``db`` to ``dest`` with the online backup API; return the copy's
    log position. One ``backup`` step: a single read transaction, so a consistent copy."""
    if not db.is_file():
        raise BackupError(f"store {db} does not exist")
    src = sqlite3.connect(db, timeout=30)
    try:
        src.execute("PRAGMA query_only = ON")
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst)  # pages=-1: everything in one step
            dst.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
            ok = dst.execute("PRAGMA integrity_check").fetchone()
            if not ok or ok[0] != "ok":
                raise BackupError(f"the copy of {db} failed its integrity check: {ok}")
            row = dst.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()
        finally:
            dst.close()
    except sqlite3.Error as e:
        raise BackupError(f"backup of {db} failed: {e}") from e
    finally:
        src.close()
    _fsync_file(dest)
    return int(row[0])


def _pg_tool(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for cand in sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True):
        return str(cand)
    raise BackupError(f"{name} not found: install PostgreSQL's client tools (Debian: postgresql-client)")


def pg_copy(dsn: str, dest: Path) -> int:
    """``pg_dump`` of the store's database inside a snapshot we export; return its log position."""
    try:
        import psycopg
    except ImportError as e:
        raise BackupError(f"a PostgreSQL backup needs psycopg: pip install 'idr[postgres]' ({e})") from e
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            snapshot_row = conn.execute("SELECT pg_export_snapshot()").fetchone()
            seq_row = conn.execute("SELECT coalesce(max(seq), 0) FROM txlog").fetchone()
            assert snapshot_row is not None and seq_row is not None
            out = subprocess.run(
                [_pg_tool("pg_dump"), "--format=custom", "--no-owner", "--no-privileges",
                 f"--snapshot={snapshot_row[0]}", "--file", str(dest), "--dbname", dsn],
                capture_output=True, text=True, timeout=24 * 3600,
            )  # fmt: skip
            conn.execute("COMMIT")
    except psycopg.Error as e:
        raise BackupError(f"backup of the PostgreSQL store failed: {e}") from e
    if out.returncode != 0:
        raise BackupError(f"pg_dump failed ({out.returncode}): {out.stderr.strip()}")
    _fsync_file(dest)
    return int(seq_row[0])


# --------------------------------------------------------------------------- backup


def backup(data_dir: Path, out: Path) -> Manifest:
    """Back up the node in ``data_dir`` (running or not) into the new directory ``out``."""
    cfg = NodeConfig.load(data_dir)
    work = _prepare_out(out)
    try:
        t0 = time.monotonic()
        if cfg.store == "sqlite":
            store_file = SQLITE_FILE
            seq = sqlite_copy(cfg.db_path, work / store_file)
        else:
            store_file = PG_DUMP_FILE
            seq = pg_copy(cfg.dsn, work / store_file)
        seconds = time.monotonic() - t0
        files = {store_file: _sha256(work / store_file)}
        for rel in _node_files(data_dir, cfg.db_path.name):
            target = work / "node" / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(data_dir / rel, target)
            files[str(Path("node") / rel)] = _sha256(target)
        manifest = Manifest(
            store=cfg.store,
            seq=seq,
            created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            node=cfg.name,
            seconds=round(seconds, 3),
            files=files,
        )
        manifest.save(work)
        if out.exists():
            out.rmdir()
        work.replace(out)
        _fsync_dir(out.parent)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return manifest


# --------------------------------------------------------------------------- restore


@dataclass
class Restored:
    manifest: Manifest
    epoch: int | None  # the restored primary's new replication epoch (None: no replication state)
    role: str | None


def _verify(src: Path, manifest: Manifest) -> None:
    for rel, digest in manifest.files.items():
        path = src / rel
        if not path.is_file():
            raise BackupError(f"backup {src} lacks {rel}")
        if _sha256(path) != digest:
            raise BackupError(f"backup {src}: {rel} does not match its checksum (damaged or altered)")


def restore(src: Path, data_dir: Path, *, dsn: str | None = None) -> Restored:
    """Restore the backup ``src`` as the node in ``data_dir`` (empty or absent)."""
    manifest = Manifest.load(src)
    _verify(src, manifest)
    if (data_dir / CONFIG_NAME).exists():
        raise BackupError(f"{data_dir} already holds a node ({CONFIG_NAME}): restore into an empty directory")
    data_dir.mkdir(parents=True, exist_ok=True)
    node_files = [rel for rel in manifest.files if rel.startswith("node/")]
    try:
        for rel in node_files:
            target = data_dir / Path(rel).relative_to("node")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src / rel, target)
        cfg = NodeConfig.load(data_dir)
        if dsn:
            cfg.dsn = dsn
            cfg.save()
        if manifest.store != cfg.store:
            raise BackupError(f"backup holds a {manifest.store} store but {CONFIG_NAME} says {cfg.store}")
        if manifest.store == "sqlite":
            tmp = data_dir / (SQLITE_FILE + ".restoring")
            shutil.copy2(src / SQLITE_FILE, tmp)
            _fsync_file(tmp)
            tmp.replace(cfg.db_path)
        else:
            _pg_restore(src / PG_DUMP_FILE, cfg.dsn)
        _check_position(cfg, manifest.seq)
        epoch, role = _new_timeline(data_dir, manifest.seq)
        _fsync_dir(data_dir)
    except BaseException:
        # Leave no half-restored node behind: without idr.toml the directory is not a node.
        (data_dir / CONFIG_NAME).unlink(missing_ok=True)
        raise
    return Restored(manifest, epoch, role)


def _pg_restore(dump: Path, dsn: str) -> None:
    try:
        import psycopg
    except ImportError as e:
        raise BackupError(f"a PostgreSQL restore needs psycopg: pip install 'idr[postgres]' ({e})") from e
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute(
                "SELECT to_regclass('meta') IS NOT NULL OR to_regclass('txlog') IS NOT NULL"
            ).fetchone()
    except psycopg.Error as e:
        raise BackupError(f"cannot connect to the PostgreSQL database to restore into: {e}") from e
    if row and row[0]:
        raise BackupError("that PostgreSQL database already holds an idr store: give an empty one (--dsn)")
    out = subprocess.run(
        [_pg_tool("pg_restore"), "--no-owner", "--no-privileges", "--single-transaction", "--exit-on-error",
         "--dbname", dsn, str(dump)],
        capture_output=True, text=True, timeout=24 * 3600,
    )  # fmt: skip
    if out.returncode != 0:
        raise BackupError(f"pg_restore failed ({out.returncode}): {out.stderr.strip()}")


def _check_position(cfg: NodeConfig, seq: int) -> None:
    from idr.node import open_store

    try:
        store = open_store(cfg)
    except ConfigError as e:
        raise BackupError(str(e)) from e
    try:
        found = store.last_seq()
    finally:
        store.close()
    if found != seq:
        raise BackupError(f"restored store is at log position {found}, the backup says {seq}")


def _new_timeline(data_dir: Path, seq: int) -> tuple[int | None, str | None]:
    """A restored primary writes from ``seq + 1`` in a new epoch (see the module docstring)."""
    from idr.replication.state import PRIMARY, ReplState

    state = ReplState.load(data_dir)
    if state is None:
        return None, None
    if state.role == PRIMARY:
        state.epoch += 1
        state.history = [(e, s) for e, s in state.history if s <= seq] + [(state.epoch, seq + 1)]
    else:
        state.history = []  # a mirror's copy is re-checked against its primary: re-copy if unsure
    state.save(data_dir)
    return state.epoch, state.role
