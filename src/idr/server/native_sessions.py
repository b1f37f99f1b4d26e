"""The native protocol's session table: Handle.Net sessions and the Teleinfo SDK's logins in one.

A session carries an identity, proven once by a challenge answer, to later requests that name
the session in their envelope SessionId. There are two ways in, one table:

- **Keyed sessions** (Handle.Net ``SESSION_SETUP``): the server picks the id (random, 31 bits)
  and the two ends agree on a session key; every request that wants the session's identity
  carries an HS_MAC credential with a fresh session counter, and certified answers are MACed
  back. The id alone is worth nothing, so these sessions are not tied to a connection (the
  reference client opens a new TCP connection per request) and work over UDP for reads.
- **Connection sessions** (the SDK's ``OC_LOGIN_ID_SYSTEM``, 2001): the client picks the id
  (10001, 10002, … in every SDK process) and sends no MAC, so the session is bound to the TCP
  connection it logged in on: it is found only on that connection and dies with it.

Bounds, so that no unauthenticated client can fill the table or push anyone else out:

- Keyed sessions not yet authenticated: at most ``per_source`` per client address (a source
  over its limit loses its own oldest), at most ``anonymous_capacity`` in all (beyond that new
  setups get SERVER_TOO_BUSY; nobody's session is evicted), and they expire after
  ``anonymous_idle`` seconds without use.
- Authenticated keyed sessions: at most ``capacity`` in all and ``per_source_authenticated`` per
  address; when full, a session is simply not promoted (its request still runs, as an
  authenticated single request), so no one is logged out by anyone else. They expire after the
  client's requested timeout, capped at ``max_idle``, without use.
- Connection sessions: at most ``per_connection`` per connection; they live as long as the
  connection (whose own idle timeout applies).

No I/O and an injected clock, so tests drive expiry directly.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

from idr.model.errors import HandleError, ResponseCode
from idr.model.handle import normalize_key
from idr.model.value import ValueReference

ANONYMOUS_IDLE = 60.0  # a session must be authenticated within this long of its last use
MAX_IDLE = 3600.0  # cap on the idle timeout a client may ask for (Handle.Net asks 24 h)
CAPACITY = 10_000
ANONYMOUS_CAPACITY = 4096
PER_SOURCE = 16
PER_SOURCE_AUTHENTICATED = 1024
PER_CONNECTION = 4
REPLAY_WINDOW = 256  # session counters remembered (Handle.Net: 200)


@dataclass(eq=False, slots=True)
class Session:
    id: int
    source: Hashable  # the client's address
    version: tuple[int, int]  # protocol version the session's messages use
    scope: Hashable | None = None  # the connection, for client-chosen ids; None for keyed
    mode: int = 0  # key exchange mode (bodies.KEY_EXCHANGE_*), 0 for connection sessions
    key: bytes | None = None  # MAC key; None until agreed (or never, for connection sessions)
    key_alg: int = 0
    claimed: ValueReference | None = None  # who the client said it is at setup / login
    identity: ValueReference | None = None  # who it proved to be (index of the key that matched)
    timeout: float = MAX_IDLE
    deadline: float = 0.0
    _sent: int = 0
    _floor: int = 0
    _seen: set[int] = field(default_factory=set)

    @property
    def keyed(self) -> bool:
        return self.scope is None

    @property
    def authenticated(self) -> bool:
        return self.identity is not None

    def next_counter(self) -> int:
        """The session counter for the next MACed answer (Handle.Net starts at 1)."""
        self._sent += 1
        return self._sent

    def accept_counter(self, n: int) -> bool:
        """Record a request's session counter; False for one already seen or too old (replay)."""
        if n <= self._floor or n in self._seen:
            return False
        self._seen.add(n)
        if len(self._seen) > REPLAY_WINDOW:
            oldest = min(self._seen)
            self._seen.discard(oldest)
            self._floor = max(self._floor, oldest)
        return True

    def matches_claim(self, who: ValueReference) -> bool:
        """Whether ``who`` is the identity the session was opened for (Handle.Net
        ``setSessionAuthenticated``: same handle and index; no claim, no promotion)."""
        c = self.claimed
        return c is not None and c.index == who.index and normalize_key(c.handle) == normalize_key(who.handle)


def _busy(text: str) -> HandleError:
    return HandleError(ResponseCode.SERVER_TOO_BUSY, text)


class SessionTable:
    def __init__(
        self,
        *,
        capacity: int = CAPACITY,
        anonymous_capacity: int = ANONYMOUS_CAPACITY,
        per_source: int = PER_SOURCE,
        per_source_authenticated: int = PER_SOURCE_AUTHENTICATED,
        per_connection: int = PER_CONNECTION,
        anonymous_idle: float = ANONYMOUS_IDLE,
        max_idle: float = MAX_IDLE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.anonymous_capacity = anonymous_capacity
        self.per_source = per_source
        self.per_source_authenticated = per_source_authenticated
        self.per_connection = per_connection
        self.anonymous_idle = anonymous_idle
        self.max_idle = max_idle
        self.clock = clock
        # keyed sessions by id, least recently used first, one dict per tier
        self._anonymous: OrderedDict[int, Session] = OrderedDict()
        self._authenticated: OrderedDict[int, Session] = OrderedDict()
        self._sources: Counter[Hashable] = Counter()  # anonymous keyed sessions per address
        self._sources_auth: Counter[Hashable] = Counter()
        self._scoped: dict[Hashable, dict[int, Session]] = {}  # connection → its sessions by id

    def __len__(self) -> int:
        return len(self._anonymous) + len(self._authenticated) + sum(map(len, self._scoped.values()))

    # ------------------------------------------------------------------ expiry

    def _idle(self, s: Session) -> float:
        return min(s.timeout, self.anonymous_idle) if s.identity is None else s.timeout

    def _drop_keyed(self, s: Session) -> None:
        if self._anonymous.pop(s.id, None) is s:
            self._sources[s.source] -= 1
            if self._sources[s.source] <= 0:
                del self._sources[s.source]
        elif self._authenticated.pop(s.id, None) is s:
            self._sources_auth[s.source] -= 1
            if self._sources_auth[s.source] <= 0:
                del self._sources_auth[s.source]

    def expire(self) -> None:
        """Forget every keyed session past its deadline (connection sessions die with theirs)."""
        now = self.clock()
        for tier in (self._anonymous, self._authenticated):
            for s in [s for s in tier.values() if s.deadline <= now]:
                self._drop_keyed(s)

    # ------------------------------------------------------------------ opening

    def new_id(self) -> int:
        while True:
            sid = secrets.randbelow(0x7FFFFFFF) + 1
            if sid not in self._anonymous and sid not in self._authenticated:
                return sid

    def open_keyed(
        self,
        source: Hashable,
        version: tuple[int, int],
        *,
        timeout: float,
        mode: int,
        key: bytes | None,
        key_alg: int,
        claimed: ValueReference | None,
    ) -> Session:
        """A new keyed session (anonymous until a challenge answer proves its claim)."""
        now = self.clock()
        if len(self._anonymous) >= self.anonymous_capacity:
            self.expire()
            if len(self._anonymous) >= self.anonymous_capacity:
                raise _busy("too many sessions being set up; try again later")
        while self._sources[source] >= self.per_source:  # this source's own oldest goes
            oldest = next(s for s in self._anonymous.values() if s.source == source)
            self._drop_keyed(oldest)
        t = timeout if 0 < timeout <= self.max_idle else self.max_idle
        s = Session(
            self.new_id(), source, version, mode=mode, key=key, key_alg=key_alg, claimed=claimed, timeout=t
        )
        s.deadline = now + self._idle(s)
        self._anonymous[s.id] = s
        self._sources[source] += 1
        return s

    def open_scoped(self, scope: Hashable, sid: int, source: Hashable, version: tuple[int, int]) -> Session:
        """The connection's session named ``sid``, created (anonymous) if it does not exist."""
        own = self._scoped.get(scope, {})
        s = own.get(sid)
        if s is not None:
            return s
        if len(own) >= self.per_connection:
            raise _busy(f"at most {self.per_connection} sessions per connection")
        s = Session(sid, source, version, scope=scope)
        self._scoped.setdefault(scope, own)[sid] = s
        return s

    # ------------------------------------------------------------------ use

    def find(self, sid: int, scope: Hashable | None = None) -> Session | None:
        """The live session a request names: the connection's own first, then a keyed one.
        Finding a keyed session does not keep it alive (the id is on the wire for anyone to
        see): :meth:`touch` does, once the request's MAC has verified."""
        if scope is not None and scope in self._scoped:
            s = self._scoped[scope].get(sid)
            if s is not None:
                return s
        s = self._anonymous.get(sid) or self._authenticated.get(sid)
        if s is None:
            return None
        if s.deadline <= self.clock():
            self._drop_keyed(s)
            return None
        return s

    def touch(self, s: Session) -> None:
        """``s`` was used by its owner: its idle clock restarts."""
        if not s.keyed:
            return
        tier = self._authenticated if s.identity is not None else self._anonymous
        if tier.get(s.id) is s:
            s.deadline = self.clock() + self._idle(s)
            tier.move_to_end(s.id)

    def authenticate(self, s: Session, identity: ValueReference) -> bool:
        """Mark ``s`` as ``identity``'s; False when a keyed session could not be promoted (the
        authenticated tier or this source's share of it is full, or ``s`` is gone)."""
        if not s.keyed:
            if self._scoped.get(s.scope, {}).get(s.id) is not s:
                return False
            s.identity = identity
            return True
        if s.identity is not None:
            s.identity = identity
            return True
        if self._anonymous.get(s.id) is not s:
            return False
        if len(self._authenticated) >= self.capacity:
            self.expire()
        if (
            len(self._authenticated) >= self.capacity
            or self._sources_auth[s.source] >= self.per_source_authenticated
        ):
            return False
        self._drop_keyed(s)
        s.identity = identity
        s.deadline = self.clock() + self._idle(s)
        self._authenticated[s.id] = s
        self._sources_auth[s.source] += 1
        return True

    def close(self, s: Session) -> None:
        if s.keyed:
            self._drop_keyed(s)
        else:
            own = self._scoped.get(s.scope)
            if own is not None and own.get(s.id) is s:
                del own[s.id]
                if not own:
                    del self._scoped[s.scope]

    def holds(self, scope: Hashable) -> bool:
        """Whether the connection has a session (it then stays open between requests)."""
        return scope in self._scoped

    def drop_scope(self, scope: Hashable) -> None:
        """The connection closed: its sessions go with it."""
        self._scoped.pop(scope, None)
