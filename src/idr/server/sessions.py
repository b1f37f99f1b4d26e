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
* The table is bounded and a session dies after ``idle`` seconds without use (Jetty's
  default idle timeout is of this order). Anonymous sessions (every 401 opens one) and
  authenticated ones are kept in two separately bounded LRU tables, so a flood of
  unauthenticated requests can only push out other anonymous sessions, never log anyone out.

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


def _new_id() -> str:
    return secrets.token_urlsafe(18)


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
        self._anonymous: OrderedDict[str, Session] = OrderedDict()
        self._authenticated: OrderedDict[str, Session] = OrderedDict()

    def __len__(self) -> int:
        return len(self._anonymous) + len(self._authenticated)

    def _expire(self, table: OrderedDict[str, Session], now: float) -> None:
        # LRU order with one idle timeout: the front is always the first to expire.
        while table:
            sid, session = next(iter(table.items()))
            if session.deadline > now and len(table) < self.capacity:
                break
            del table[sid]

    def create(self) -> Session:
        now = self.clock()
        self._expire(self._anonymous, now)
        session = Session(_new_id(), new_nonce(), now + self.idle)
        self._anonymous[session.id] = session
        return session

    def get(self, sid: str) -> Session | None:
        """The live session named ``sid`` (its idle clock restarted), or None."""
        table = self._authenticated if sid in self._authenticated else self._anonymous
        session = table.get(sid)
        if session is None:
            return None
        now = self.clock()
        if session.deadline <= now:
            del table[sid]
            return None
        session.deadline = now + self.idle
        table.move_to_end(sid)
        return session

    def authenticate(self, session: Session, identity: ValueReference, id_text: str) -> None:
        """Record who ``session`` proved to be. It gets a new id and moves to the authenticated
        table, so an id known before the login — one an attacker opened and handed to the
        victim (session fixation) — names nothing afterwards. A session removed or expired
        while its signature was being checked stays gone (no resurrection)."""
        session.identity, session.id_text = identity, id_text
        if (
            self._anonymous.pop(session.id, None) is None
            and self._authenticated.pop(session.id, None) is None
        ):
            return
        session.id = _new_id()
        self._expire(self._authenticated, self.clock())
        self._authenticated[session.id] = session

    def take_nonce(self, session: Session) -> bytes:
        """The nonce to check an attempt against; the session gets a fresh one at once (before
        any verification awaits), so two racing attempts cannot both use it."""
        nonce, session.nonce = session.nonce, new_nonce()
        return nonce

    def remove(self, sid: str) -> bool:
        gone = self._anonymous.pop(sid, None) or self._authenticated.pop(sid, None)
        return gone is not None


__all__ = ["NONCE_SIZE", "Session", "SessionTable", "new_nonce"]
