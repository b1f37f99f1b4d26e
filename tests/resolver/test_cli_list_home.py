"""``idr list``, ``idr home`` and ``idr unhome`` against a live node over TCP: authenticated as
the protocol asks (402 challenge answered, or a session), refused clearly otherwise."""

from __future__ import annotations

from tests.resolver.native_node import SECRET, NativeThread, keyed_node, native_thread  # noqa: F401
from tests.resolver.native_node import run_idr as idr

AUTH = ["--auth", "300:0.NA/88.100", "--secret", SECRET.decode()]


def test_list_handles_of_a_prefix(keyed_node: NativeThread) -> None:  # noqa: F811
    s = keyed_node.address
    code, out = idr("list", "88.100", "--server", s, *AUTH)
    assert code == 0, out
    assert out.split() == ["88.100/bench-0", "88.100/bench-1", "88.100/big"]  # plain lines, key order
    # the prefix handle form, and over a session (identity proven once)
    code, again = idr("list", "0.NA/88.100", "--server", s, "--session", *AUTH)
    assert code == 0 and again == out, again
    code, out = idr("create", "88.100/listed", "--value", "1:URL:https://l.example/", "--server", s, *AUTH)
    assert code == 0, out
    code, out = idr("list", "88.100", "--server", s, *AUTH)
    assert "88.100/listed" in out.split()


def test_list_needs_an_identity_with_the_right(native_thread: NativeThread) -> None:  # noqa: F811
    s = native_thread.address
    code, out = idr("list", "88.100", "--server", s)
    assert code == 1 and "needs --auth" in out
    code, out = idr("list", "88.100", "--server", s, "--auth", "300:0.NA/88.100", "--secret", "wrong")
    assert code == 1 and "AUTHENTICATION_FAILED" in out and "Traceback" not in out
    # an identity that authenticates but holds no right on 0.NA/88.100
    code, out = idr("create", "88.100/user", "--value", "300:HS_SECKEY:user-secret", "--server", s, *AUTH)
    assert code == 0, out
    code, out = idr("list", "88.100", "--server", s, "--auth", "300:88.100/user", "--secret", "user-secret")
    assert code == 1 and "INSUFFICIENT_PERMISSIONS" in out
    code, out = idr("list", "--server", s)
    assert code == 1 and "give a PREFIX, or --homed" in out


def test_home_and_unhome(native_thread: NativeThread) -> None:  # noqa: F811
    s = native_thread.address
    code, out = idr("list", "--homed", "--server", s)
    assert code == 0 and out.split() == ["0.NA/88.100"], out
    code, out = idr("home", "88.200", "--server", s, *AUTH)
    assert code == 0 and "homed 88.200" in out, out
    code, out = idr("list", "--homed", "--server", s, *AUTH)
    assert code == 0 and out.split() == ["0.NA/88.100", "0.NA/88.200"], out
    code, out = idr("create", "88.200/x", "--value", "1:URL:https://x.example/", "--server", s, *AUTH)
    assert code == 0, out
    code, out = idr("resolve", "88.200/x", "--server", s)
    assert code == 0 and "https://x.example/" in out
    code, out = idr("unhome", "88.200", "--server", s, *AUTH)
    assert code == 0 and "unhomed 88.200" in out, out
    code, out = idr("resolve", "88.200/x", "--server", s)
    assert code == 1 and "SERVER_NOT_RESPONSIBLE" in out
    code, out = idr("list", "--homed", "--server", s)
    assert out.split() == ["0.NA/88.100"]
    # not an admin of the server: refused, nothing changes
    code, out = idr("create", "88.100/user", "--value", "300:HS_SECKEY:user-secret", "--server", s, *AUTH)
    assert code == 0, out
    code, out = idr("home", "88.300", "--server", s, "--auth", "300:88.100/user", "--secret", "user-secret")
    assert code == 1 and "INSUFFICIENT_PERMISSIONS" in out
    assert idr("list", "--homed", "--server", s)[1].split() == ["0.NA/88.100"]
