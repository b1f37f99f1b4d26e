"""``idr batch FILE``: Handle.Net GenericBatch files, parsed as that tool reads them and run
against a live node. The example files in batch_files/ follow the Technical Manual's chapter 4
examples (prefix 88.100 instead of 12345)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from idr.codec.keys import encode_public_key
from idr.codec.values import decode_admin, decode_vlist
from idr.model.handle import normalize_key
from idr.model.value import HandleRecord, ValueReference
from idr.resolver.batch import (
    Authenticate,
    Delete,
    Home,
    Invalid,
    Remove,
    SessionSetup,
    Write,
    parse_batch,
    parse_value,
)
from idr.resolver.keys import handle_private_key
from tests.resolver.native_node import NativeThread, key, keyed_node  # noqa: F401
from tests.resolver.native_node import run_idr as idr

FILES = Path(__file__).parent / "batch_files"
KEYS = Path(__file__).resolve().parents[1] / "vectors" / "hdllib" / "keyfiles"


@pytest.fixture
def node(keyed_node: NativeThread) -> NativeThread:  # noqa: F811
    return keyed_node


def record(node: NativeThread, handle: str) -> HandleRecord | None:
    return node.node.service.store.get(normalize_key(handle))


def data(rec: HandleRecord | None, index: int) -> bytes | None:
    assert rec is not None
    v = rec.value(index)
    return None if v is None else v.data


# -------------------------------------------------------------------------- parsing


def test_the_manual_examples_parse() -> None:
    ops = parse_batch((FILES / "manual_examples.txt").read_text())
    kinds = "Authenticate Write Write Write Write Write Write Remove Remove Write Delete"
    assert [type(op).__name__ for op in ops] == kinds.split()
    auth, create1 = ops[0], ops[1]
    assert auth == Authenticate(1, "SECKEY", ValueReference("0.NA/88.100", 300), secret=b"top-secret")
    assert isinstance(create1, Write) and (create1.line, create1.op, create1.handle) == (
        4,
        "CREATE",
        "88.100/hdl1",
    )
    admin, seckey, url = create1.values
    a = decode_admin(admin.data)
    assert (a.handle, a.index, a.permissions, admin.ttl, admin.permissions) == (
        "88.100/hdl1",
        300,
        0xFFF,
        86400,
        0b1110,
    )
    assert (seckey.type, seckey.data, seckey.permissions) == ("HS_SECKEY", b"my_password", 0b1100)
    assert (url.index, url.data) == (3, b"http://www.handle.net")
    assert ops[4].values[1].ttl == 8600  # type: ignore[union-attr]
    assert ops[7] == Remove(29, "88.100/hdl1", (5,)) and ops[8] == Remove(30, "88.100/hdl2", (5, 6))
    hdl3 = ops[9]
    assert isinstance(hdl3, Write)
    # "110011111111": no derived-prefix rights; character i is bit 1 << i, as GenericBatch encodes it
    assert decode_admin(hdl3.values[0].data).permissions == 0xFF3
    assert decode_vlist(hdl3.values[1].data) == (
        ValueReference("88.100/USR1", 300),
        ValueReference("88.100/USR2", 300),
    )
    assert ops[10] == Delete(38, "88.100/hdl3")


def test_admin_permission_characters_are_genericbatchs_bits() -> None:
    # GenericBatch fills AdminRecord.perms[i] from character i, and perms[7..10] are modify,
    # remove and add admin, then read value: so a lone 1 in position 10 is READ_VALUE (0x400)
    for i in range(12):
        bits = "".join("1" if j == i else "0" for j in range(12))
        v = parse_value(f"100 HS_ADMIN 86400 1110 ADMIN 300:{bits}:0.NA/88.100")
        assert decode_admin(v.data).permissions == 1 << i


def test_file_values_and_session_and_home_blocks(tmp_path: Path) -> None:
    pub = tmp_path / "pub.bin"
    pub.write_bytes((KEYS / "dsa_pub.bin").read_bytes())
    pem = tmp_path / "key.pem"
    from idr.resolver.keys import write_key_pair

    write_key_pair(key("ed25519"), pem)
    text = f"""SESSIONSETUP
USESESSION:1
OPTIONS:111
TIMEOUT:24

ADD 88.100/x
300 HS_PUBKEY 86400 1110 FILE {pub}
301 HS_PUBKEY 86400 1110 FILE {pem}.pub

HOME [::1]:2641:TCP
0.NA/88.5
88.6
"""
    session, add, home = parse_batch(text)
    assert session == SessionSetup(1, True, ("OPTIONS encrypted", "TIMEOUT"))
    assert isinstance(add, Write) and add.values[0].data == pub.read_bytes()
    assert add.values[1].data == encode_public_key(key("ed25519").public_key())  # PEM: an idr extension
    assert home == Home(
        10, True, "::1", 2641, "TCP", ((11, "0.NA/88.5"),), ((12, "invalid NA handle name: 88.6"),)
    )


def test_bad_lines_are_reported_with_their_line_numbers() -> None:
    ops = parse_batch((FILES / "errors.txt").read_text())
    invalid = {op.line: op.message for op in ops if isinstance(op, Invalid)}
    assert "ttl 'soon' is not a number" in invalid[9]  # the bad value line itself, not its CREATE
    assert "permissions '11x0'" in invalid[13]
    assert "'BASE64' is not UTF8, ADMIN, FILE or LIST" in invalid[16]
    assert "admin permissions '1111' are not twelve" in invalid[19]
    assert "unknown command 'FROBNICATE'" in invalid[21]
    assert "REMOVE is <index>" in invalid[22]
    assert "value index 'x' is not a number" in invalid[23]
    assert "invalid address:port:protocol" in invalid[24]
    # the rest of a bad block is skipped, and the operations after it are read as usual
    writes = [op.handle for op in ops if isinstance(op, Write)]
    assert writes == ["88.100/ok-1", "88.100/ok-2"]
    assert [op.handle for op in ops if isinstance(op, Delete)] == ["88.100/never-existed"]


def test_handle_net_key_files_decode() -> None:
    """``privkey.bin`` as hdl-keygen writes it (vectors made by hdllib's own Util.encrypt):
    in clear, PBKDF2 + AES (its default with a passphrase) and PBKDF2 + DESede."""
    for alg in ("rsa", "dsa"):
        pub = (KEYS / f"{alg}_pub.bin").read_bytes()
        for enc in ("none", "aes", "desede"):
            raw = (KEYS / f"{alg}_priv_{enc}.bin").read_bytes()
            k = handle_private_key(raw, None if enc == "none" else "pass phrase é".encode())
            mine = encode_public_key(k.public_key())
            # hdllib writes 4 zero bytes after an RSA public key (its buffer is one int too long)
            assert pub == mine + (b"\0\0\0\0" if alg == "rsa" else b"")
        with pytest.raises(ValueError, match="give its passphrase"):
            handle_private_key((KEYS / f"{alg}_priv_aes.bin").read_bytes())
        with pytest.raises(ValueError, match="wrong passphrase"):
            handle_private_key((KEYS / f"{alg}_priv_aes.bin").read_bytes(), b"not it")


# -------------------------------------------------------------------------- running


def test_the_manual_examples_run(node: NativeThread, tmp_path: Path) -> None:
    code, out = idr("batch", str(FILES / "manual_examples.txt"), "--server", node.address)
    assert code == 0, out
    assert "==>SUCCESS[4]: create:88.100/hdl1" in out
    assert "==>SUCCESS[17]: add values:88.100/hdl2" in out
    assert "==>SUCCESS[30]: remove values:88.100/hdl2" in out
    assert "==>SUCCESS[38]: delete:88.100/hdl3" in out
    assert "Successes/Total Entries: 10/10" in out
    hdl1, hdl2 = record(node, "88.100/hdl1"), record(node, "88.100/hdl2")
    assert data(hdl1, 3) == b"http://www.handle.net/newadmin.html" and data(hdl1, 5) is None
    assert data(hdl1, 6) == b"hdladmin@example.org"
    assert (
        data(hdl2, 3) == b"http://www.example.com/new.html"
        and data(hdl2, 5) is None
        and data(hdl2, 6) is None
    )
    assert record(node, "88.100/hdl3") is None
    # the same file again: everything exists or is gone now, each failure says why, exit code 1
    log = tmp_path / "again.log"
    code, out = idr("batch", str(FILES / "manual_examples.txt"), str(log), "--server", node.address)
    text = log.read_text()
    assert code == 1 and out == ""
    assert "==>FAILURE[4]: create:88.100/hdl1: HANDLE_ALREADY_EXISTS (101)" in text
    assert "==>FAILURE[29]: remove values:88.100/hdl1: VALUES_NOT_FOUND (200)" in text


def test_errors_do_not_stop_the_batch(node: NativeThread) -> None:
    code, out = idr("batch", str(FILES / "errors.txt"), "--server", node.address)
    assert code == 1
    assert "==>SUCCESS[4]: create:88.100/ok-1" in out and "==>SUCCESS[27]: create:88.100/ok-2" in out
    assert "==>INVALID[9]: create:88.100/bad-ttl: value line: ttl 'soon' is not a number" in out
    assert "==>FAILURE[30]: delete:88.100/never-existed: HANDLE_NOT_FOUND (100)" in out
    assert "Successes/Total Entries: 2/3" in out
    assert record(node, "88.100/bad-ttl") is None and record(node, "88.100/ok-2") is not None


def test_identities_keys_and_sessions(node: NativeThread, tmp_path: Path) -> None:
    """AUTHENTICATE with a Handle.Net privkey.bin (encrypted) and with a PEM file, a session
    turned on by SESSIONSETUP, and an operation before any identity."""
    priv = tmp_path / "privkey.bin"
    shutil.copy(KEYS / "dsa_priv_aes.bin", priv)
    pem = tmp_path / "rsa.pem"
    from idr.resolver.keys import write_key_pair

    write_key_pair(key("rsa"), pem)
    setup = tmp_path / "setup.txt"
    setup.write_text(
        f"""AUTHENTICATE SECKEY:300:0.NA/88.100
top-secret

ADD 0.NA/88.100
310 HS_PUBKEY 86400 1110 FILE {KEYS / "dsa_pub.bin"}
311 HS_PUBKEY 86400 1110 FILE {pem}.pub
110 HS_ADMIN 86400 1110 ADMIN 310:111111111111:0.NA/88.100
111 HS_ADMIN 86400 1110 ADMIN 311:111111111111:0.NA/88.100
"""
    )
    code, out = idr("batch", str(setup), "--server", node.address)
    assert code == 0, out
    batch = tmp_path / "batch.txt"
    batch.write_text(
        f"""CREATE 88.100/before-auth
1 URL 86400 1110 UTF8 https://nobody.example/

AUTHENTICATE PUBKEY:310:0.NA/88.100
{priv}|pass phrase é

CREATE 88.100/by-dsa
100 HS_ADMIN 86400 1110 ADMIN 310:111111111111:0.NA/88.100
1 URL 86400 1110 UTF8 https://dsa.example/

SESSIONSETUP
USESESSION:1

AUTHENTICATE PUBKEY:311:0.NA/88.100
{pem}

CREATE 88.100/by-rsa-in-session
100 HS_ADMIN 86400 1110 ADMIN 311:111111111111:0.NA/88.100
1 URL 86400 1110 UTF8 https://rsa.example/

DELETE 88.100/by-rsa-in-session
DELETE 88.100/by-dsa
"""
    )
    code, out = idr("batch", str(batch), "--server", node.address)
    assert "==>FAILURE[1]: create:88.100/before-auth: no identity" in out
    assert "==>SUCCESS[7]: create:88.100/by-dsa" in out, out
    assert "==>SUCCESS[17]: create:88.100/by-rsa-in-session" in out, out
    assert "==>SUCCESS[21]: delete:88.100/by-rsa-in-session" in out, out
    # the session's identity (311) is no admin of by-dsa: the server says so, the batch goes on
    assert "==>FAILURE[22]: delete:88.100/by-dsa: INSUFFICIENT_PERMISSIONS (401)" in out
    assert code == 1 and "Successes/Total Entries: 3/5" in out
    assert record(node, "88.100/by-rsa-in-session") is None and record(node, "88.100/by-dsa") is not None
    bad = tmp_path / "bad-key.txt"
    bad.write_text(f"AUTHENTICATE PUBKEY:310:0.NA/88.100\n{priv}\n\nDELETE 88.100/by-dsa\n")
    code, out = idr("batch", str(bad), "--server", node.address)
    assert "==>INVALID[1]: error in authentication:" in out and "give its passphrase" in out
    assert "==>FAILURE[4]: delete:88.100/by-dsa: no identity" in out
    assert record(node, "88.100/by-dsa") is not None


def test_home_and_unhome_at_the_named_server(node: NativeThread, tmp_path: Path) -> None:
    f = tmp_path / "home.txt"
    f.write_text((FILES / "home.txt").read_text().replace("@SERVER@", node.address))
    code, out = idr("batch", str(f), "--server", node.address)
    assert code == 0, out
    assert "==>SUCCESS[5]: home/unhome:0.NA/88.200" in out and "==>SUCCESS[9]: home/unhome:0.NA/88.300" in out
    assert sorted(node.node.service.homed_prefixes()) == ["88.100", "88.200"]
    # a server that does not answer: invalid, and the batch goes on
    f.write_text("AUTHENTICATE SECKEY:300:0.NA/88.100\ntop-secret\n\nHOME 127.0.0.1:9:TCP\n0.NA/88.9\n")
    code, out = idr("batch", str(f), "--server", node.address, "--timeout", "1")
    assert code == 1 and "==>INVALID[4]: error in home/unhome NA handle, invalid server" in out


def test_cli_refusals() -> None:
    code, out = idr("batch", "/nonexistent/batch.txt")
    assert code == 1 and "cannot read" in out and "Traceback" not in out
