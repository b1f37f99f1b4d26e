"""Handle.Net batch files (``hdl-genericbatch``, the Technical Manual's chapter 4), so operators
moving to idr keep their scripts.

A batch file is text, one operation after another (commands in any case):

* ``AUTHENTICATE SECKEY:<index>:<handle>`` then the secret on the next line;
  ``AUTHENTICATE PUBKEY:<index>:<handle>`` then ``<key file>[|<passphrase>]`` (a Handle.Net
  ``privkey.bin`` or a PEM file). It applies to the operations after it.
* ``CREATE <handle>``, ``ADD <handle>``, ``MODIFY <handle>``, each followed by value lines up
  to a blank line (or the end): ``<index> <type> <ttl> <perms> <data>`` where ``perms`` is four
  0/1 characters (admin read, admin write, public read, public write) and ``data`` is one of
  ``UTF8 <text>``, ``ADMIN <index>:<12 permission bits>:<handle>``, ``FILE <path>`` (the bytes
  of a file; for HS_PUBKEY a PEM key file too, an idr extension) or ``LIST <index>:<handle>;…``.
* ``DELETE <handle>``; ``REMOVE <index>[,<index>…]:<handle>``.
* ``HOME <address>:<port>:<protocol>`` / ``UNHOME …`` then ``0.NA/<prefix>`` lines up to a blank
  line: every server of that (primary) site is told to (un)home each prefix.
* ``SESSIONSETUP`` then ``KEY:value`` lines up to a blank line; ``USESESSION:1`` makes the
  operations after it run in a session (idr's client sets sessions up with Diffie-Hellman; the
  exchange-key lines are accepted and reported as not used).

The log says what happened to each operation as GenericBatch's does (``==>SUCCESS[n]: …``,
``==>FAILURE[n]: …``, ``==>INVALID[n]: …``, then ``Successes/Total Entries: s/t``), where ``n``
is the line the operation or the bad line is on in the file. A bad line spoils only its own
operation: the rest of its block is skipped and the next operation runs.

Parsing (``parse_batch``) does no I/O beyond reading the files a ``FILE`` value names; running
(``run_batch``) sends each operation with :class:`idr.resolver.client.HandleClient` over TCP.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from idr.codec.keys import encode_public_key
from idr.codec.values import encode_admin, encode_vlist
from idr.model.errors import ResponseCode
from idr.model.value import AdminRecord, HandleValue, ValueReference

if TYPE_CHECKING:
    from idr.resolver.client import Authenticator, HandleClient

COMMANDS = ("AUTHENTICATE", "CREATE", "ADD", "MODIFY", "DELETE", "REMOVE", "HOME", "UNHOME", "SESSIONSETUP")
# The twelve admin permission characters → HS_ADMIN bits. GenericBatch sets AdminRecord.perms[i]
# from character i, and that array's order is the bits' order (add handle 0x001 … list handles
# 0x800, with modify/remove/add admin before read value): character i is bit 1 << i. (The
# Technical Manual's §4.9 prose lists "read values" eighth; the tool never read it that way.)
ADMIN_PERM_BITS = tuple(1 << i for i in range(12))
_INT32 = (-(2**31), 2**31 - 1)


class BatchError(ValueError):
    """One bad line: what is wrong with it."""


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class Authenticate:
    line: int
    kind: str  # SECKEY | PUBKEY
    identity: ValueReference
    secret: bytes = b""  # SECKEY
    key_file: str = ""  # PUBKEY
    passphrase: str | None = None


@dataclass(frozen=True)
class Write:
    """CREATE, ADD or MODIFY with its values."""

    line: int
    op: str
    handle: str
    values: tuple[HandleValue, ...]


@dataclass(frozen=True)
class Delete:
    line: int
    handle: str


@dataclass(frozen=True)
class Remove:
    line: int
    handle: str
    indexes: tuple[int, ...]


@dataclass(frozen=True)
class Home:
    line: int
    home: bool
    host: str
    port: int
    protocol: str
    prefixes: tuple[tuple[int, str], ...]  # (line, 0.NA/… handle)
    invalid: tuple[tuple[int, str], ...] = ()  # prefix lines that are not 0.NA handles


@dataclass(frozen=True)
class SessionSetup:
    line: int
    use: bool
    ignored: tuple[str, ...] = ()  # settings idr's client does not use, named for the log


@dataclass(frozen=True)
class Invalid:
    line: int
    message: str


Operation = Authenticate | Write | Delete | Remove | Home | SessionSetup | Invalid


# --------------------------------------------------------------------------- parsing


class _Lines:
    def __init__(self, text: str) -> None:
        self.lines = text.splitlines()
        self.pos = 0

    def next(self) -> tuple[int, str] | None:
        """The next line and its number (1-based), or None at the end."""
        if self.pos >= len(self.lines):
            return None
        self.pos += 1
        return self.pos, self.lines[self.pos - 1]

    def block(self) -> Iterator[tuple[int, str]]:
        """Lines up to a blank line (consumed) or the end."""
        while (item := self.next()) is not None and item[1].strip():
            yield item[0], item[1].strip()

    def skip_block(self) -> None:
        for _ in self.block():
            pass


def _int(text: str, what: str, lo: int = _INT32[0], hi: int = _INT32[1]) -> int:
    try:
        n = int(text.strip())
    except ValueError:
        raise BatchError(f"{what} {text.strip()!r} is not a number") from None
    if not lo <= n <= hi:
        raise BatchError(f"{what} {n} is out of range")
    return n


def _reference(text: str, what: str) -> ValueReference:
    idx, sep, handle = text.strip().partition(":")
    if not sep or not handle.strip():
        raise BatchError(f"{what} {text.strip()!r} is not <index>:<handle>")
    return ValueReference(handle.strip(), _int(idx, f"{what} index", 0))


def parse_value(text: str, read_file: Callable[[str], bytes] = lambda p: Path(p).read_bytes()) -> HandleValue:
    """One value line: ``<index> <type> <ttl> <perms> <UTF8|ADMIN|FILE|LIST> <data>``."""
    parts = text.strip().split(None, 5)
    if len(parts) < 5:
        raise BatchError("a value line is <index> <type> <ttl> <perms> <UTF8|ADMIN|FILE|LIST> <data>")
    index = _int(parts[0], "value index")
    type_ = parts[1]
    ttl = _int(parts[2], "ttl")
    perms = parts[3]
    if len(perms) < 4 or any(c not in "01" for c in perms[:4]):
        raise BatchError(
            f"permissions {perms!r} are not four 0/1 characters (admin read/write, public read/write)"
        )
    permissions = sum(bit for c, bit in zip(perms[:4], (0x8, 0x4, 0x2, 0x1), strict=True) if c == "1")
    kind = parts[4].upper()
    rest = parts[5].strip() if len(parts) > 5 else ""
    if not rest:
        raise BatchError(f"no data after {kind}")
    if kind == "UTF8":
        data = rest.encode("utf-8")
    elif kind == "ADMIN":
        idx, sep1, tail = rest.partition(":")
        bits, sep2, handle = tail.partition(":")
        if not (sep1 and sep2 and handle.strip()):
            raise BatchError(f"admin record {rest!r} is not <index>:<12 permission bits>:<handle>")
        bits = bits.strip()
        if len(bits) != 12 or any(c not in "01" for c in bits):
            raise BatchError(f"admin permissions {bits!r} are not twelve 0/1 characters")
        mask = sum(bit for c, bit in zip(bits, ADMIN_PERM_BITS, strict=True) if c == "1")
        data = encode_admin(AdminRecord(handle.strip(), _int(idx, "admin index", 0), mask))
    elif kind == "FILE":
        try:
            data = read_file(rest)
        except OSError as e:
            raise BatchError(f"cannot read {rest}: {e.strerror or e}") from e
        if type_.upper() == "HS_PUBKEY" and data.lstrip().startswith(b"-----BEGIN"):
            from idr.resolver.keys import KeyFileError, load_public_key

            try:
                data = encode_public_key(load_public_key(Path(rest)))
            except KeyFileError as e:
                raise BatchError(str(e)) from e
    elif kind == "LIST":
        refs = [_reference(r, "reference") for r in rest.split(";") if r.strip()]
        if not refs:
            raise BatchError("LIST names no <index>:<handle>;")
        data = encode_vlist(refs)
    else:
        raise BatchError(f"value data kind {parts[4]!r} is not UTF8, ADMIN, FILE or LIST")
    return HandleValue(index, type_, data, ttl=ttl, permissions=permissions)


_ADDRESS = re.compile(r"^(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:\s]+)):(?P<port>\d+):(?P<proto>\w+)$")


def parse_batch(
    text: str, read_file: Callable[[str], bytes] = lambda p: Path(p).read_bytes()
) -> list[Operation]:
    """Every operation of a batch file, in order, and what is wrong with each bad one."""
    lines = _Lines(text)
    ops: list[Operation] = []
    while (item := lines.next()) is not None:
        n, raw = item
        line = raw.strip()
        if not line:
            continue
        command, _, rest = line.partition(" ")
        command, rest = command.upper(), rest.strip()
        try:
            if command == "AUTHENTICATE":
                ops.append(_authenticate(n, rest, lines))
            elif command in ("CREATE", "ADD", "MODIFY"):
                ops.append(_write(n, command, rest, lines, read_file))
            elif command == "DELETE":
                if not rest:
                    raise BatchError("DELETE needs a handle")
                ops.append(Delete(n, rest))
            elif command == "REMOVE":
                idx, sep, handle = rest.partition(":")
                if not sep or not handle.strip():
                    raise BatchError("REMOVE is <index>[,<index>…]:<handle>")
                indexes = tuple(_int(i, "value index") for i in idx.split(","))
                ops.append(Remove(n, handle.strip(), indexes))
            elif command in ("HOME", "UNHOME"):
                ops.append(_home(n, command == "HOME", rest, lines))
            elif command == "SESSIONSETUP":
                ops.append(_session(n, lines))
            else:
                ops.append(
                    Invalid(n, f"error in command line: unknown command {command!r} ({', '.join(COMMANDS)})")
                )
        except BatchError as e:
            ops.append(Invalid(getattr(e, "line", n), str(e)))
    return ops


def _authenticate(n: int, rest: str, lines: _Lines) -> Authenticate:
    kind, _, ref = rest.partition(":")
    kind = kind.strip().upper()
    if kind not in ("SECKEY", "PUBKEY"):
        raise BatchError("AUTHENTICATE is SECKEY:<index>:<handle> or PUBKEY:<index>:<handle>")
    identity = _reference(ref, "identity")
    item = lines.next()
    if item is None or not item[1].strip():
        raise BatchError(
            "the secret key is missing on the next line"
            if kind == "SECKEY"
            else "the key file is missing on the next line"
        )
    if kind == "SECKEY":
        return Authenticate(n, kind, identity, secret=item[1].strip().encode("utf-8"))
    path, pipe, passphrase = item[1].strip().partition("|")
    return Authenticate(
        n, kind, identity, key_file=path.strip(), passphrase=passphrase.strip() if pipe else None
    )


def _write(n: int, op: str, handle: str, lines: _Lines, read_file: Callable[[str], bytes]) -> Write:
    if not handle:
        lines.skip_block()
        raise BatchError(f"{op} needs a handle")
    values = []
    for vn, text in lines.block():
        try:
            values.append(parse_value(text, read_file))
        except BatchError as e:
            lines.skip_block()
            err = BatchError(f"{op.lower()}:{handle}: value line: {e}")
            err.line = vn  # type: ignore[attr-defined]
            raise err from e
    if not values:
        raise BatchError(f"no handle values for {handle}")
    return Write(n, op, handle, tuple(values))


def _home(n: int, home: bool, rest: str, lines: _Lines) -> Home:
    m = _ADDRESS.match(rest)
    if m is None:
        lines.skip_block()
        raise BatchError("invalid address:port:protocol specification (e.g. 10.27.10.28:2641:TCP)")
    host = m.group("v6") or m.group("host")
    port = _int(m.group("port"), "port", 1, 65535)
    prefixes, invalid = [], []
    for pn, text in lines.block():
        if text.upper().startswith("0.NA/") and len(text) > 5:
            prefixes.append((pn, text))
        else:
            invalid.append((pn, f"invalid NA handle name: {text}"))
    return Home(n, home, host, port, m.group("proto").upper(), tuple(prefixes), tuple(invalid))


def _session(n: int, lines: _Lines) -> SessionSetup:
    use: bool | None = None
    ignored = []
    for sn, text in lines.block():
        key, sep, value = text.partition(":")
        key = key.strip().upper()
        if not sep:
            raise BatchError(f"session line {text!r} is not KEY:value")
        if key == "USESESSION":
            use = _int(value, "USESESSION flag") > 0
        elif key in ("PUBEXNGKEYFILE", "PUBEXNGKEYREF", "PRIVEXNGKEYFILE", "PASSPHRASE", "TIMEOUT"):
            ignored.append(key)
        elif key == "OPTIONS":
            if value.strip()[:1] == "1":
                ignored.append("OPTIONS encrypted")
        else:
            err = BatchError(f"not a session setting: {key}")
            err.line = sn  # type: ignore[attr-defined]
            raise err
    if use is None:
        raise BatchError("SESSIONSETUP needs USESESSION:0 or USESESSION:1")
    return SessionSetup(n, use, tuple(ignored))


# --------------------------------------------------------------------------- running


@dataclass
class BatchReport:
    lines: list[str] = field(default_factory=list)
    successes: int = 0
    total: int = 0
    invalid: int = 0

    @property
    def ok(self) -> bool:
        return self.successes == self.total and self.invalid == 0


async def run_batch(
    ops: Sequence[Operation],
    server: tuple[str, int],
    *,
    auth: Authenticator | None = None,
    timeout: float = 10.0,
    session: bool = False,
    log: Callable[[str], None] = print,
    line_count: int = 0,
) -> BatchReport:
    """Run ``ops`` against the server at ``server`` (HOME/UNHOME: at the servers they name);
    ``auth``: the identity to start with (an ``Authenticator``), as GenericBatch's caller may
    give one. Every outcome goes to ``log`` as it happens."""
    from idr.resolver.client import (
        ClientError,
        HandleClient,
        PublicKeyAuth,
        ResponseError,
        SecretKeyAuth,
    )
    from idr.resolver.keys import KeyFileError, load_private_key

    report = BatchReport()
    started = time.monotonic()

    def say(text: str) -> None:
        report.lines.append(text)
        log(text)

    current = auth
    use_session = session
    open_client: HandleClient | None = None

    async def client() -> HandleClient:
        """One kept-alive connection to the server, for the identity and session mode now."""
        nonlocal open_client
        c = open_client
        if c is not None and (c.auth is not current or c.use_session != use_session):
            await c.close()
            c = None
        if c is None:
            c = HandleClient(*server, timeout=timeout, auth=current, keep_alive=True, session=use_session)
        open_client = c
        return c

    async def attempt(op: Write | Delete | Remove) -> None:
        what = _what(op)
        report.total += 1
        if current is None:
            say(f"==>FAILURE[{op.line}]: {what}: no identity: give AUTHENTICATE first (or --auth)")
            return
        try:
            await _perform(await client(), op)
        except ResponseError as e:
            say(f"==>FAILURE[{op.line}]: {what}: {_describe(e.code, e.message)}")
            return
        except ClientError as e:
            say(f"==>FAILURE[{op.line}]: {what}: {e}")
            return
        report.successes += 1
        say(f"==>SUCCESS[{op.line}]: {what}")

    try:
        say(f"Start Time: {time.strftime('%a %b %d %H:%M:%S %Z %Y')}")
        for op in ops:
            match op:
                case Invalid(line=line, message=message):
                    report.invalid += 1
                    say(f"==>INVALID[{line}]: {message}")
                case Authenticate(kind="SECKEY", identity=identity, secret=secret):
                    current = SecretKeyAuth(identity, secret)
                case Authenticate(line=line, identity=identity, key_file=path, passphrase=passphrase):
                    try:
                        key = load_private_key(Path(path), passphrase.encode("utf-8") if passphrase else None)
                    except KeyFileError as e:
                        report.invalid += 1
                        say(f"==>INVALID[{line}]: error in authentication: {e}")
                        continue
                    current = PublicKeyAuth(identity, key)
                case SessionSetup(line=line, use=use, ignored=ignored):
                    use_session = use
                    if ignored:
                        unused = ", ".join(ignored)
                        say(f"==>NOTE[{line}]: session settings not used by idr's client: {unused}")
                case Write() | Delete() | Remove():
                    await attempt(op)
                case Home():
                    await _run_home(op, current, timeout, use_session, report, say)
    finally:
        if open_client is not None:
            await open_client.close()
        elapsed = time.monotonic() - started
        say(f"Successes/Total Entries: {report.successes}/{report.total}")
        say(f"Batch File Lines: {line_count}")
        say(f"Finish Time: {time.strftime('%a %b %d %H:%M:%S %Z %Y')}")
        rate = report.total / elapsed if elapsed > 0 else 0.0
        speed = f"an average speed of {rate:.1f} operations/second"
        say(f"This batch took {elapsed:.0f} seconds to complete at {speed}")
    return report


async def _run_home(
    op: Home,
    auth: Authenticator | None,
    timeout: float,
    session: bool,
    report: BatchReport,
    say: Callable[[str], None],
) -> None:
    """GenericBatch's way: the site of the named server (it must be a primary site), then each
    prefix homed (or unhomed) at every server of that site."""
    from idr.model.site import TransportProtocol
    from idr.resolver.client import ClientError, HandleClient, ResponseError

    what = "home/unhome"
    for line, message in op.invalid:
        report.invalid += 1
        say(f"==>INVALID[{line}]: {message}")
    if op.protocol not in ("TCP", "UDP"):
        report.invalid += 1
        say(f"==>INVALID[{op.line}]: protocol {op.protocol} is not served here: give the TCP or UDP port")
        return
    try:
        async with HandleClient(op.host, op.port, timeout=timeout) as probe:
            site = await probe.site_info()
    except (ClientError, ResponseError) as e:
        report.invalid += 1
        say(f"==>INVALID[{op.line}]: error in home/unhome NA handle, invalid server: {e}")
        return
    if not site.primary:
        report.invalid += 1
        say(f"==>INVALID[{op.line}]: error in home/unhome NA handle, invalid server: not primary server")
        return
    servers = [(s.host, s.port_for(TransportProtocol.TCP)) for s in site.servers]
    for line, prefix in op.prefixes:
        report.total += 1
        if auth is None:
            say(f"==>FAILURE[{line}]: {what}:{prefix}: no identity: give AUTHENTICATE first (or --auth)")
            continue
        failed = ""
        for host, port in servers:
            if not port:
                failed = f"server {host} has no TCP interface"
                break
            try:
                async with HandleClient(host, port, timeout=timeout, auth=auth, session=session) as c:
                    await (c.home(prefix) if op.home else c.unhome(prefix))
            except ResponseError as e:
                failed = _describe(e.code, e.message)
                break
            except ClientError as e:
                failed = str(e)
                break
        if failed:
            say(f"==>FAILURE[{line}]: {what}:{prefix}: {failed}")
        else:
            report.successes += 1
            say(f"==>SUCCESS[{line}]: {what}:{prefix}")


def _what(op: Write | Delete | Remove) -> str:
    """How GenericBatch names an operation in its log."""
    if isinstance(op, Write):
        return {"CREATE": "create", "ADD": "add values", "MODIFY": "modify values"}[op.op] + f":{op.handle}"
    return (f"delete:{op.handle}") if isinstance(op, Delete) else f"remove values:{op.handle}"


async def _perform(c: HandleClient, op: Write | Delete | Remove) -> None:
    if isinstance(op, Delete):
        await c.delete(op.handle)
    elif isinstance(op, Remove):
        await c.remove_values(op.handle, op.indexes)
    elif op.op == "CREATE":
        await c.create(op.handle, op.values)
    elif op.op == "ADD":
        await c.add_values(op.handle, op.values)
    else:
        await c.modify_values(op.handle, op.values)


def _describe(code: int, message: str) -> str:
    try:
        name = ResponseCode(code).name
    except ValueError:
        name = f"code {code}"
    return f"{name} ({code})" + (f": {message}" if message else "")
