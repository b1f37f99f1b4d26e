"""A site's durable replication state: its role, the highest epoch it knows, its log's history.

Kept in ``replication.json`` next to the store, replaced atomically (write, fsync, rename,
fsync the directory) so a crash leaves either the old or the new state, never a mix.

``history`` is a list of ``(epoch, first_seq)``: log entries from ``first_seq`` on were
written by the primary of ``epoch``. Only one primary ever writes in an epoch, so two logs
that agree on the epoch of their entry at seq ``s`` hold the same entries up to ``s`` (the
log-matching argument of Raft). An empty history means "unknown": the log must be re-copied
before it is trusted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import orjson

STATE_NAME = "replication.json"
PRIMARY = "primary"
MIRROR = "mirror"


def epoch_of(history: list[tuple[int, int]], seq: int) -> int | None:
    """Epoch in which the entry ``seq`` was written (0 for the empty log; None = unknown)."""
    if seq == 0:
        return 0
    found: int | None = None
    for epoch, first in history:
        if first <= seq:
            found = epoch
    return found


def logs_match(mine: list[tuple[int, int]], theirs: list[tuple[int, int]], seq: int) -> bool:
    """Whether a log ending at ``seq`` with history ``mine`` is a prefix of a log with ``theirs``."""
    a = epoch_of(mine, seq)
    return a is not None and a == epoch_of(theirs, seq)


@dataclass
class ReplState:
    role: str
    epoch: int
    history: list[tuple[int, int]] = field(default_factory=list)
    node_id: str = field(default_factory=lambda: secrets.token_hex(4))

    @classmethod
    def initial(cls, role: str) -> ReplState:
        """A primary starts epoch 1 owning its whole log; a mirror knows nothing yet."""
        if role == PRIMARY:
            return cls(PRIMARY, 1, [(1, 1)])
        return cls(MIRROR, 0, [])

    @classmethod
    def load(cls, data_dir: Path) -> ReplState | None:
        path = data_dir / STATE_NAME
        try:
            raw = orjson.loads(path.read_bytes())
        except FileNotFoundError:
            return None
        return cls(
            role=str(raw["role"]),
            epoch=int(raw["epoch"]),
            history=[(int(e), int(s)) for e, s in raw["history"]],
            node_id=str(raw["node_id"]),
        )

    def save(self, data_dir: Path) -> None:
        path = data_dir / STATE_NAME
        tmp = path.with_suffix(".tmp")
        doc = {"role": self.role, "epoch": self.epoch, "history": self.history, "node_id": self.node_id}
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, orjson.dumps(doc, option=orjson.OPT_INDENT_2))
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        dfd = os.open(data_dir, os.O_RDONLY)
        try:
            with contextlib.suppress(OSError):  # some filesystems refuse fsync on a directory
                os.fsync(dfd)
        finally:
            os.close(dfd)
