"""Throwaway local PostgreSQL clusters for tests and benchmarks (not for production).

A cluster lives in a fresh temp directory, listens on a free loopback port and keeps its
unix socket in its own directory, so it never meets the machine's own PostgreSQL.
PostgreSQL refuses to run as root; when we are root (CI containers) every server command
runs as an unprivileged system user (``idrtest``, created if missing) via ``runuser``.

``standby()`` makes a streaming-replication hot standby of a running cluster with
``pg_basebackup -R``: the setup a mirror site reads from (docs/postgres.md).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from tests.ports import free_port

SERVICE_USER = "idrtest"
_START_TIMEOUT_S = 60


class PgClusterError(RuntimeError):
    """The cluster could not be created, started or stopped; the message says why."""


def find_bindir(pattern: str = "/usr/lib/postgresql/*/bin/initdb", path: str | None = None) -> Path:
    """The newest ``/usr/lib/postgresql/*/bin`` holding initdb, else initdb on ``path`` ($PATH)."""
    found = sorted(
        (Path(p).parent for p in glob.glob(pattern)),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1]
    on_path = shutil.which("initdb", path=path)
    if on_path:
        return Path(on_path).parent
    raise PgClusterError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found under /usr/lib/postgresql/*/bin "
        "or on PATH: install them (Debian: apt-get install -y postgresql)"
    )


def _service_user() -> str | None:
    """None when we may run the server ourselves; else the user to run it as (created if needed)."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
    return SERVICE_USER


class PgCluster:
    """One local cluster: ``start()`` it, connect with ``dsn()``, ``destroy()`` it."""

    def __init__(self, root: Path | None = None, *, port: int | None = None) -> None:
        self.bindir = find_bindir()
        self.user = _service_user()
        self.root = Path(root) if root else Path(tempfile.mkdtemp(prefix="idr-pg-"))
        self.data = self.root / "data"
        self.sockdir = self.root
        self.logfile = self.root / "server.log"
        self.port = port or free_port()
        self.running = False
        self.started_once = False
        if self.user:
            os.chmod(self.root, 0o700)
            shutil.chown(self.root, self.user, self.user)

    # -- commands -------------------------------------------------------------------

    def _run(self, *args: str, timeout: float = _START_TIMEOUT_S) -> str:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        try:
            out = subprocess.run(cmd, check=True, capture_output=True, text=True, timeout=timeout)
        except subprocess.CalledProcessError as e:
            raise PgClusterError(
                f"{' '.join(cmd)} failed ({e.returncode}): {e.stderr.strip()}{self._log_tail()}"
            ) from e
        except subprocess.TimeoutExpired as e:
            raise PgClusterError(f"{' '.join(cmd)} did not finish in {timeout} s{self._log_tail()}") from e
        return out.stdout

    def _log_tail(self) -> str:
        with contextlib.suppress(OSError):
            lines = self.logfile.read_text("utf-8", "replace").splitlines()[-15:]
            return "\nserver log:\n" + "\n".join(lines)
        return ""

    def _conf(self, extra: dict[str, str]) -> None:
        settings = {
            "listen_addresses": "'127.0.0.1'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.sockdir}'",
            "fsync": "on",
            "synchronous_commit": "on",
            "wal_level": "replica",
            "max_wal_senders": "5",
            "hot_standby": "on",
            "max_connections": "200",
            "logging_collector": "off",
            **extra,
        }
        with (self.data / "postgresql.conf").open("a", encoding="utf-8") as f:
            f.write("\n# idr throwaway cluster\n")
            f.writelines(f"{k} = {v}\n" for k, v in settings.items())

    def init(self, **settings: str) -> PgCluster:
        """initdb with trust auth for local and loopback connections (replication too)."""
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
            "--locale=C", "--no-instructions",
        )  # fmt: skip
        self._conf(settings)
        with (self.data / "pg_hba.conf").open("a", encoding="utf-8") as f:
            f.write("host replication postgres 127.0.0.1/32 trust\n")
        return self

    def start(self) -> PgCluster:
        """Start the server. Other suites run in parallel and may take our port between
        ``free_port`` and the bind: a first start moves to another free port; a restart (clients
        hold the DSN) waits for the port, up to ``_START_TIMEOUT_S``."""
        deadline = time.monotonic() + _START_TIMEOUT_S
        while True:
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.logfile), "-w", "-t",
                          str(_START_TIMEOUT_S), "start")  # fmt: skip
                break
            except PgClusterError as e:
                if "Address already in use" not in str(e) or time.monotonic() > deadline:
                    raise
                if self.started_once:
                    time.sleep(0.5)
                else:
                    self.port = free_port()
                    with (self.data / "postgresql.conf").open("a", encoding="utf-8") as f:
                        f.write(f"port = {self.port}\n")
        self.running = self.started_once = True
        return self

    def stop(self, mode: str = "fast") -> None:
        """``mode="immediate"`` is a crash as far as the data is concerned (no checkpoint,
        recovery from WAL at the next start)."""
        if self.running:
            self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", str(_START_TIMEOUT_S), "stop")
            self.running = False

    def destroy(self) -> None:
        """Stop the server (if running) and delete everything it wrote."""
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def standby(self) -> PgCluster:
        """A hot standby of this (running) cluster, streaming from it, started."""
        other = PgCluster()
        try:
            other._run(
                "pg_basebackup", "-D", str(other.data), "-h", "127.0.0.1", "-p", str(self.port),
                "-U", "postgres", "-X", "stream", "-R", "-c", "fast",
            )  # fmt: skip
            other._conf({})  # its own port and socket dir override the copied settings
            other.start()
        except BaseException:
            other.destroy()
            raise
        return other

    def server_pss_bytes(self) -> int:
        """Proportional set size of every server process: shared buffers counted once."""
        pid_file = self.data / "postmaster.pid"
        try:
            root_pid = int(pid_file.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return 0
        return sum(_pss(pid) for pid in [root_pid, *_children(root_pid)])

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


def start_cluster(**settings: str) -> PgCluster:
    """A new cluster, initialised and running; destroyed again if it fails to start."""
    cluster = PgCluster()
    try:
        return cluster.init(**settings).start()
    except BaseException:
        cluster.destroy()
        raise


@contextlib.contextmanager
def primary_and_standby() -> Iterator[tuple[PgCluster, PgCluster]]:
    """A primary holding idr's schema and a streaming hot standby made from its base backup,
    both destroyed afterwards (the schema first: the standby is read-only)."""
    from idr.store.postgres import PostgresStore

    primary = start_cluster()
    standby: PgCluster | None = None
    try:
        PostgresStore(primary.dsn()).close()
        standby = primary.standby()
        wait_ready(standby.dsn())
        yield primary, standby
    finally:
        if standby is not None:
            standby.destroy()
        primary.destroy()


def wait_ready(dsn: str, timeout: float = 10.0) -> None:
    """Poll until the server accepts connections (a standby may take a moment)."""
    import psycopg

    deadline = time.monotonic() + timeout
    while True:
        try:
            with psycopg.connect(dsn, connect_timeout=2):
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def wait_replayed(primary_dsn: str, standby_dsn: str, timeout: float = 60.0) -> float:
    """Wait until the standby has replayed everything the primary had written when called;
    returns the seconds it took. Streaming and replay are PostgreSQL's own work (a WAL flush
    on a busy disk can take seconds): tests bound what idr does from this point on."""
    import psycopg

    t0 = time.monotonic()
    with psycopg.connect(primary_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_current_wal_lsn()::text").fetchone()
    assert row is not None
    target = row[0]
    with psycopg.connect(standby_dsn, autocommit=True) as conn:
        while True:
            got = conn.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()
            if got is not None and got[0]:
                return time.monotonic() - t0
            if time.monotonic() - t0 > timeout:
                raise PgClusterError(f"the standby did not replay up to {target} in {timeout} s")
            time.sleep(0.01)


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _pss(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
