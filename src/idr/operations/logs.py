"""A node's logs, from ``[logging]`` in idr.toml: an event/error log and the access log.

* **Event and error log** (loggers under ``idr``): JSON lines in a file, or readable text on
  stderr (journald and ``docker logs`` take stderr). Each record carries what ``extra=``
  gave it — client, interface, operation, handle, peer… — so an error names its context;
  exceptions carry their traceback in ``exc``.
* **Access log** (``idr.access``): the JSON lines :mod:`idr.server.accesslog` batches.

Both go through a ``QueueHandler``: the event loop only enqueues, and a ``QueueListener``
thread writes the file, so a slow disk never stalls answering. Rotation is the standard
library's: ``RotatingFileHandler`` by size (``rotate_bytes``) or ``TimedRotatingFileHandler``
(``rotate_when``, e.g. ``"midnight"``), keeping ``backups`` old files. Worker processes
(``idr serve --workers``) write their own files, ``NAME-wN.EXT``, since two processes
rotating one file would lose lines.

``LogSetup.apply`` is also the reload path (SIGHUP): levels, destinations and rotation change
in place; switching the access log on or off needs a restart (its hooks are fixed when the
front-ends start), and ``apply`` says so.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import logging
import logging.handlers
import os
import queue
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import orjson

from idr.core.config import ConfigError, LoggingConfig
from idr.server.accesslog import ACCESS_LOGGER, AccessLog, WriteTally

LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR,
          "critical": logging.CRITICAL}  # fmt: skip
ROOT = "idr"
log = logging.getLogger("idr.accesslog")
_STANDARD = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime"}


def level_of(name: str, where: str) -> int:
    try:
        return LEVELS[name.strip().lower()]
    except KeyError:
        names = ", ".join(LEVELS)
        raise ConfigError(f"[logging] {where}: level must be one of {names}, not {name!r}") from None


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: time, level, logger, message, the ``extra`` context, exc."""

    def __init__(self, static: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.static = static or {}

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(timespec="microseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
            **_context(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            doc["exc"] = record.exc_text
        return orjson.dumps(doc, default=str).decode()


class TextFormatter(logging.Formatter):
    """``time LEVEL logger: message [key=value …]`` for people reading stderr."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")
        self.prefix = prefix

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        ctx = _context(record)
        if ctx:
            head, sep, tail = text.partition("\n")
            text = head + " [" + " ".join(f"{k}={v}" for k, v in ctx.items()) + "]" + sep + tail
        return self.prefix + text


class _Queue(logging.handlers.QueueHandler):
    """Enqueue a copy with the message merged and the traceback as text (the listener's
    formatter renders it), instead of the stock ``prepare`` which folds both into ``msg``."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        out = copy.copy(record)
        out.msg = record.getMessage()
        out.args = None
        if record.exc_info:
            out.exc_text = logging.Formatter().formatException(record.exc_info)
        out.exc_info = None
        return out


def _open_private(handler: logging.FileHandler) -> Any:
    """Log files hold client addresses and identities: created 0600, as the node's other files
    (a new file after each rotation too), never readable by others for an instant."""
    fd = os.open(handler.baseFilename, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    _end_cut_line(fd, handler.baseFilename)
    return open(fd, handler.mode, encoding=handler.encoding, errors=handler.errors)


def _end_cut_line(fd: int, path: str) -> None:
    """A file whose last line was cut short (a kill -9 mid-write, a full disk) gets its newline
    first, so every line written from now on is whole and parses."""
    try:
        size = os.fstat(fd).st_size
        if not size:
            return
        with open(path, "rb") as f:
            f.seek(size - 1)
            last = f.read(1)
        if last != b"\n":
            os.write(fd, b"\n")
    except OSError:
        pass  # not a regular file, or the disk is still full: the next write will say so


REOPEN = "idr_reopen"  # a record carrying this asks the file handler to reopen its file (SIGHUP)
LINES = "access_lines"  # an access-log batch carries its number of lines (idr.server.accesslog)


class _PrivateFile(logging.FileHandler):
    """A log file as the node writes it: private (``_open_private``), reopened on request (a
    SIGHUP after logrotate moved it away), and, for the access log (``tally`` set), each batch's
    lines counted written or lost: a full disk or an unwritable file costs the batch, is counted
    (``/metrics``) and warned about once, and never reaches answering."""

    tally: WriteTally | None = None
    _failed = False

    def _open(self) -> Any:
        return _open_private(self)

    def emit(self, record: logging.LogRecord) -> None:
        if record.__dict__.get(REOPEN):
            self._drop_stream()
            return
        lines = record.__dict__.get(LINES, 0)
        self._failed = False
        super().emit(record)
        tally = self.tally
        if tally is None or not lines:
            return
        if self._failed:
            tally.lost += lines
        else:
            if tally.errors and tally.lost and not tally.last_error.startswith("recovered"):
                log.warning("access log: writing again after %d lost lines", tally.lost)
                tally.last_error = "recovered: " + tally.last_error
            tally.written += lines

    def handleError(self, record: logging.LogRecord) -> None:
        tally = self.tally
        if tally is None or not record.__dict__.get(LINES):
            super().handleError(record)
            return
        self._failed = True
        tally.errors += 1
        exc = sys.exc_info()[1]
        first = not tally.last_error or tally.last_error.startswith("recovered")
        tally.last_error = f"{type(exc).__name__}: {exc}"
        if first:
            log.warning("access log: cannot write %s (%s); lines are counted as lost until it can",
                        self.baseFilename, tally.last_error)  # fmt: skip
        self._drop_stream()  # whatever the stream still buffers is part of the lost batch

    def _drop_stream(self) -> None:
        """Close the file; the next record opens it again (by name: a new file after logrotate)."""
        stream, self.stream = self.stream, None
        if stream is not None:
            with contextlib.suppress(OSError, ValueError):
                stream.close()


class _PrivateRotating(_PrivateFile, logging.handlers.RotatingFileHandler):
    pass


class _PrivateTimedRotating(_PrivateFile, logging.handlers.TimedRotatingFileHandler):
    pass


class _Lines(logging.Formatter):
    """The access log's records are its lines, already formatted: written as they are (no copy
    of a batch of thousands of lines through ``%(message)s``)."""

    def format(self, record: logging.LogRecord) -> str:
        return record.msg if isinstance(record.msg, str) else record.getMessage()


def worker_path(path: Path, worker: int) -> Path:
    return path if worker == 0 else path.with_name(f"{path.stem}-w{worker}{path.suffix}")


@dataclass
class _Sink:
    """One destination: the handler on the logger side and the listener writing it."""

    key: tuple[object, ...]
    handler: logging.Handler
    listener: logging.handlers.QueueListener

    def reopen(self) -> None:
        """Reopen the file by name after what is queued is written (SIGHUP: logrotate moved it)."""
        if isinstance(self.listener.handlers[0], _PrivateFile):
            self.listener.queue.put_nowait(logging.makeLogRecord({REOPEN: True}))

    def stop(self) -> None:
        self.listener.stop()  # drains the queue
        for h in self.listener.handlers:
            h.close()


class LogSetup:
    """The logging of one process of a node (``worker`` 0 is ``idr serve`` itself)."""

    def __init__(self, data_dir: Path, worker: int = 0) -> None:
        self.data_dir = Path(data_dir)
        self.worker = worker
        self.config: LoggingConfig | None = None
        self.events: _Sink | None = None
        self.access_sink: _Sink | None = None
        self.access: AccessLog | None = None

    def _path(self, text: str) -> Path:
        path = Path(text)
        if not path.is_absolute():
            path = self.data_dir / path
        return worker_path(path, self.worker)

    def _file_handler(
        self, path: Path, cfg: LoggingConfig, tally: WriteTally | None = None
    ) -> logging.Handler:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        # The access log's file is opened at its first batch: one that cannot be written (a
        # directory in its place, a file logrotate left to another owner) costs its lines,
        # counted, not the node's start; the event log's must open (it says what went wrong).
        delay = tally is not None
        handler: _PrivateFile
        if cfg.rotate_when:
            handler = _PrivateTimedRotating(
                path, when=cfg.rotate_when, backupCount=cfg.backups, encoding="utf-8", utc=True, delay=delay
            )
        else:
            handler = _PrivateRotating(
                path, maxBytes=cfg.rotate_bytes, backupCount=cfg.backups, encoding="utf-8", delay=delay
            )
        handler.tally = tally
        return handler

    def _sink(self, key: tuple[object, ...], target: logging.Handler) -> _Sink:
        q: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
        listener = logging.handlers.QueueListener(q, target, respect_handler_level=False)
        listener.start()
        return _Sink(key, _Queue(q), listener)

    def apply(self, cfg: LoggingConfig) -> list[str]:
        """Install ``cfg`` (first call) or move to it (reload); returns what needs a restart."""
        validate(cfg)
        needs_restart: list[str] = []
        root = logging.getLogger(ROOT)
        root.setLevel(level_of(cfg.level, "level"))
        previous = self.config.levels if self.config else {}
        for name in previous:
            if name not in cfg.levels:
                logging.getLogger(name).setLevel(logging.NOTSET)
        for name, level in cfg.levels.items():
            logging.getLogger(name).setLevel(level_of(level, f"levels.{name}"))

        # event and error log
        key: tuple[object, ...] = (cfg.file, cfg.format, cfg.rotate_bytes, cfg.rotate_when, cfg.backups)
        if self.events is not None and self.events.key == key:
            self.events.reopen()  # a reload (SIGHUP): the same file, reopened by name
        if self.events is None or self.events.key != key:
            static = {"pid": os.getpid(), **({"worker": self.worker} if self.worker else {})}
            target: logging.Handler
            if cfg.file:
                target = self._file_handler(self._path(cfg.file), cfg)
                fmt = cfg.format if cfg.format != "auto" else "json"
            else:
                target = logging.StreamHandler(sys.stderr)
                fmt = cfg.format if cfg.format != "auto" else "text"
            prefix = f"worker {self.worker}: " if self.worker else ""
            target.setFormatter(JsonFormatter(static) if fmt == "json" else TextFormatter(prefix))
            new = self._sink(key, target)
            root.addHandler(new.handler)
            root.propagate = False
            old, self.events = self.events, new
            if old is not None:
                root.removeHandler(old.handler)
                old.stop()

        # access log
        access = logging.getLogger(ACCESS_LOGGER)
        access.propagate = False
        access.setLevel(logging.INFO)
        was_on = self.config is not None and bool(self.config.access)
        if self.config is not None and was_on != bool(cfg.access):
            needs_restart.append("logging.access (switching the access log on or off)")
        elif cfg.access:
            if self.access is None:
                self.access = AccessLog(access, interval=cfg.flush_interval)
                self.access.tally = WriteTally()
            akey: tuple[object, ...] = (cfg.access, cfg.rotate_bytes, cfg.rotate_when, cfg.backups)
            if self.access_sink is not None and self.access_sink.key == akey:
                self.access_sink.reopen()
            if self.access_sink is None or self.access_sink.key != akey:
                handler = self._file_handler(self._path(cfg.access), cfg, self.access.tally)
                handler.setFormatter(_Lines())
                new = self._sink(akey, handler)
                access.addHandler(new.handler)
                old, self.access_sink = self.access_sink, new
                if old is not None:
                    access.removeHandler(old.handler)
                    old.stop()
            self.access.interval = cfg.flush_interval
        if needs_restart and self.config is not None:  # the access log stays as it started
            cfg = replace(cfg, access=self.config.access)
        self.config = cfg
        return needs_restart

    def close(self) -> None:
        """Write what is buffered and stop the writer threads (at shutdown)."""
        if self.access is not None:
            self.access.stop()
        for sink, name in ((self.access_sink, ACCESS_LOGGER), (self.events, ROOT)):
            if sink is not None:
                logging.getLogger(name).removeHandler(sink.handler)
                sink.stop()
        self.access_sink = self.events = None
        logging.getLogger(ROOT).propagate = True


def validate(cfg: LoggingConfig) -> None:
    level_of(cfg.level, "level")
    for name, level in cfg.levels.items():
        level_of(level, f"levels.{name}")
    if cfg.format not in ("auto", "json", "text"):
        raise ConfigError(f"[logging] format must be auto, json or text, not {cfg.format!r}")
    if cfg.rotate_bytes < 0 or cfg.backups < 0:
        raise ConfigError("[logging] rotate_bytes and backups are 0 or more")
    if cfg.flush_interval <= 0:
        raise ConfigError("[logging] flush_interval must be more than 0 seconds")
