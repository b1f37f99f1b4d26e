"""HTTP authentication sessions for ``Authorization: Handle`` (Handle.Net 9 manual §14.6).

Handle.Net keeps its ``HandleAuthenticationStatus`` (sessionId, nonce, who authenticated) in
the servlet container's HTTP session. idr has no servlet sessions, so this is that table:
a session is named by an unguessable id the client echoes as ``sessionId=…``; it carries the
nonce the client must sign (``nonce || cnonce``) and, once a signature verified, the identity.

Where idr is stricter than Handle.Net, on purpose:

* A nonce is good for one authentication attempt. Handle.Net keeps one nonce for the life of
  the session (and accepts a byte-identical ``Authorization`` header again, its
  ``checkSeenBefore``); here every attempt, good or bad, consumes the nonce and the session
  gets a fresh one, so a captured signed header can never be replayed.
* The table is bounded (least recently used sessions are dropped first) and a session dies
  after ``idle`` seconds without use (Jetty's default idle timeout is of this order), so
  unauthenticated clients cannot grow it without limit.

No I/O and no clock of its own (``clock`` is injected), so tests drive expiry directly.
"""

from __future__ import annotations

import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from idr.model.value import ValueReference

NONCE_SIZE = 16  # Handle.Net ChallengeResponse.generateNonce
SESSION_IDLE = 30 * 60.0  # seconds without use before a session is forgotten
MAX_SESSIONS = 10_000


@dataclass(slots=True)
class Session:
    """One client's authentication state; ``identity`` is None until a signature verified."""

    id: str
    nonce: bytes
    deadline: float
    identity: ValueReference | None = None
    id_text: str | None = None  # the id as the client wrote it (HN echoes it in ``id``)


def new_nonce() -> bytes:
    return secrets.token_bytes(NONCE_SIZE)


class SessionTable:
    """Sessions by id, in least-recently-used order; bounded in count and idle time."""

    def __init__(
        self,
        *,
        idle: float = SESSION_IDLE,
        capacity: int = MAX_SESSIONS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.idle = idle
        self.capacity = capacity
        self.clock = clock
        self._sessions: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self, now: float) -> None:
        # LRU order with one idle timeout: the front is always the first to expire.
        while self._sessions:
            sid, session = next(iter(self._sessions.items()))
            if session.deadline > now and len(self._sessions) < self.capacity:
                break
            del self._sessions[sid]

    def create(self) -> Session:
        now = self.clock()
        self._expire(now)
        session = Session(secrets.token_urlsafe(18), new_nonce(), now + self.idle)
        self._sessions[session.id] = session
        return session

    def get(self, sid: str) -> Session | None:
        """The live session named ``sid`` (its idle clock restarted), or None."""
        session = self._sessions.get(sid)
        if session is None:
            return None
        now = self.clock()
        if session.deadline <= now:
            del self._sessions[sid]
            return None
        session.deadline = now + self.idle
        self._sessions.move_to_end(sid)
        return session

    def take_nonce(self, session: Session) -> bytes:
        """The nonce to check an attempt against; the session gets a fresh one at once (before
        any verification awaits), so two racing attempts cannot both use it."""
        nonce, session.nonce = session.nonce, new_nonce()
        return nonce

    def remove(self, sid: str) -> bool:
        return self._sessions.pop(sid, None) is not None


__all__ = ["NONCE_SIZE", "Session", "SessionTable", "new_nonce"]
