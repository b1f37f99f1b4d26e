"""What the console keeps in memory per node: sessions, the per-minute resolution ring, batch jobs.

Nothing here is durable on purpose: a restart logs everyone out (sessions hold an
authenticated identity, which must not outlive the process that checked the secret), and
the resolution counters the ring samples restart at zero with the core anyway.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from idr.model.value import ValueReference

SESSION_TTL = 8 * 3600.0  # an operator's working day
MAX_SESSIONS = 10_000  # per table (anonymous, logged in); the least recently used go first
MAX_SESSIONS_PER_IDENTITY = 32  # logged-in sessions of one identity
RING_MINUTES = 60
MAX_JOBS = 64
MAX_RUNNING_PER_OWNER = 2


@dataclass
class Session:
    """One browser: a CSRF token always, an identity once logged in over HTTPS."""

    sid: str
    csrf: str
    secure: bool
    expires: float
    identity: ValueReference | None = None
    flash: list[tuple[str, str]] = field(default_factory=list)  # (kind, label key or text)


class Sessions:
    """Server-side sessions keyed by an unguessable id (the cookie carries only the id).

    Every page view without a session makes one (for its CSRF token), so anonymous sessions and
    logged-in ones are kept in two tables, each bounded: a flood of anonymous visitors pushes out
    only other anonymous sessions, never logs an operator out. One identity keeps at most
    ``MAX_SESSIONS_PER_IDENTITY`` logged-in sessions (its oldest go first)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic, capacity: int | None = None) -> None:
        self._anonymous: OrderedDict[str, Session] = OrderedDict()
        self._logged_in: OrderedDict[str, Session] = OrderedDict()
        self.capacity = MAX_SESSIONS if capacity is None else capacity
        self.clock = clock

    def __len__(self) -> int:
        return len(self._anonymous) + len(self._logged_in)

    def _table(self, s: Session) -> OrderedDict[str, Session]:
        return self._anonymous if s.identity is None else self._logged_in

    def get(self, sid: str | None) -> Session | None:
        if not sid:
            return None
        s = self._anonymous.get(sid) or self._logged_in.get(sid)
        if s is None:
            return None
        table = self._table(s)
        if s.expires < self.clock():
            del table[sid]
            return None
        table.move_to_end(sid)
        return s

    def new(self, secure: bool, identity: ValueReference | None = None) -> Session:
        s = Session(
            sid=secrets.token_urlsafe(32),
            csrf=secrets.token_urlsafe(32),
            secure=secure,
            expires=self.clock() + SESSION_TTL,
            identity=identity,
        )
        table = self._table(s)
        if identity is not None:
            mine = [k for k, v in table.items() if v.identity == identity]
            for sid in mine[: max(0, len(mine) - MAX_SESSIONS_PER_IDENTITY + 1)]:
                del table[sid]
        while table and len(table) >= self.capacity:
            table.popitem(last=False)
        table[s.sid] = s
        return s

    def drop(self, sid: str) -> None:
        self._anonymous.pop(sid, None)
        self._logged_in.pop(sid, None)

    def rotate(self, old: Session, identity: ValueReference | None) -> Session:
        """A new id on every login and logout, so a session id seen before login is worthless after."""
        self.drop(old.sid)
        s = self.new(old.secure, identity)
        s.flash = old.flash
        return s


class ResolutionRing:
    """Resolutions per minute for the last hour, from samples of a monotonically rising counter.

    Sampling is idempotent (each sample just records the counter's latest value for its
    minute), so several samplers — one per listener — may feed the same ring.
    """

    def __init__(self, minutes: int = RING_MINUTES, clock: Callable[[], float] = time.time) -> None:
        self.minutes = minutes
        self.clock = clock
        # (minute, counter at its first sample, counter at its last sample)
        self._last: deque[tuple[int, int, int]] = deque(maxlen=minutes + 1)
        self._day = self._today()
        self._day_base = 0  # the counter at the start of today (0: counters start with the process)

    def _today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock()).date()

    def sample(self, counter: int) -> None:
        minute = int(self.clock() // 60)
        today = self._today()
        if today != self._day:
            self._day, self._day_base = today, counter
        if self._last and self._last[-1][0] == minute:
            m, first, _ = self._last[-1]
            self._last[-1] = (m, first, counter)
        elif not self._last or self._last[-1][0] < minute:
            self._last.append((minute, counter, counter))

    def today(self, counter: int) -> int:
        return max(0, counter - self._day_base) if self._today() == self._day else counter

    def per_minute(self) -> list[tuple[int, int]]:
        """``(minute start as Unix seconds, resolutions in that minute)`` for the last hour, oldest first.

        A minute counts from the end of the previous sampled minute (or, for the very first
        one, from its first sample) to its last sample. A minute with no sample counts nothing;
        its resolutions show in the next sampled minute (the sampler runs every few seconds, so
        that only happens when the event loop was blocked).
        """
        now = int(self.clock() // 60)
        first_minute = now - self.minutes + 1
        seen = {m: (first, last) for m, first, last in self._last}
        prev: int | None = None
        for m, _, last in self._last:
            if m < first_minute:
                prev = last
        out: list[tuple[int, int]] = []
        for m in range(first_minute, now + 1):
            got = seen.get(m)
            if got is None:
                out.append((m * 60, 0))
                continue
            first, last = got
            out.append((m * 60, max(0, last - (prev if prev is not None else first))))
            prev = last
        return out


@dataclass
class BatchJob:
    """A CSV registration running in the background; the browser polls ``progress``."""

    id: str
    owner: str  # the session identity that started it: only it may read progress and the report
    total: int
    done: int = 0
    ok: int = 0
    errors: list[tuple[int, str, str]] = field(default_factory=list)  # (line, handle, reason)
    finished: bool = False

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "total": self.total,
            "done": self.done,
            "ok": self.ok,
            "failed": len(self.errors),
            "finished": self.finished,
        }


class Jobs:
    """Batch jobs, their progress and error reports: at most ``MAX_JOBS`` kept (finished ones are
    forgotten first) and ``MAX_RUNNING_PER_OWNER`` running per identity, so one operator cannot
    queue unbounded work behind the single writer or push others' reports out."""

    def __init__(self) -> None:
        self._jobs: OrderedDict[str, BatchJob] = OrderedDict()

    def running(self, owner: str) -> int:
        return sum(1 for j in self._jobs.values() if j.owner == owner and not j.finished)

    def new(self, owner: str, total: int) -> BatchJob | None:
        """A new job, or None while ``owner`` has ``MAX_RUNNING_PER_OWNER`` running."""
        if self.running(owner) >= MAX_RUNNING_PER_OWNER:
            return None
        while len(self._jobs) >= MAX_JOBS:
            done = next((k for k, j in self._jobs.items() if j.finished), None)
            if done is None:
                self._jobs.popitem(last=False)
            else:
                del self._jobs[done]
        job = BatchJob(secrets.token_urlsafe(12), owner, total)
        self._jobs[job.id] = job
        return job

    def get(self, job_id: str, owner: str) -> BatchJob | None:
        job = self._jobs.get(job_id)
        return job if job is not None and job.owner == owner else None
