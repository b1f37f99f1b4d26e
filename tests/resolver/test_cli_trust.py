"""``idr cert``, ``idr sign`` and ``idr resolve --verify`` against a live node: a root
certificate, an intermediate, a signed record; a value changed afterwards is reported."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from idr.cli import app
from idr.resolver.keys import write_key_pair
from tests.resolver.native_node import SECRET, NativeThread, key, native_thread  # noqa: F401

runner = CliRunner()
AUTH = ["--auth", "300:0.NA/88.100", "--secret", SECRET.decode()]


def idr(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, " ".join(result.output.split())


def test_sign_certify_verify_and_tamper(native_thread: NativeThread, tmp_path: Path) -> None:  # noqa: F811
    s = native_thread.address
    rsa, dsa = tmp_path / "rsa.pem", tmp_path / "dsa.pem"
    write_key_pair(key("rsa"), rsa)  # identity 301:0.NA/88.100 of the node (HS_PUBKEY)
    write_key_pair(key("dsa"), dsa)  # identity 302:0.NA/88.100
    # the root: 301 certifies itself; 301 certifies 302 for handles under 88.100
    code, out = idr(
        "cert", "301:0.NA/88.100", "--subject-key", f"{rsa}.pub", "--perm", "everything",
        "--issuer-key", str(rsa), "--store", "--index", "501", "--server", s, *AUTH,
    )  # fmt: skip
    assert code == 0 and "stored at 0.NA/88.100 index 501" in out, out
    under = "handlesUnderThisPrefix:0.NA/88.100"
    code, out = idr(
        "cert", "302:0.NA/88.100", "--subject-key", f"{dsa}.pub", "--perm", under,
        "--issuer", "301:0.NA/88.100", "--issuer-key", str(rsa),
        "--store", "--index", "500", "--server", s, *AUTH,
    )  # fmt: skip
    assert code == 0, out
    # 302 signs a record, naming where its certificates are
    code, out = idr(
        "sign", "88.100/bench-0", "--auth", "302:0.NA/88.100", "--key", str(dsa),
        "--chain", "500:0.NA/88.100", "--chain", "501:0.NA/88.100", "--server", s,
    )  # fmt: skip
    assert code == 0 and "HS_SIGNATURE at index 400 by 302:0.NA/88.100, values 1, 2, 100" in out, out
    # anyone holding the root key verifies it
    code, out = idr("resolve", "88.100/bench-0", "--server", s, "--verify", "--trust-root", f"{rsa}.pub")
    assert code == 0, out
    assert "every public value is signed and the chain reaches a trusted root" in out
    assert "certified 302:0.NA/88.100 ← 301:0.NA/88.100 (trusted root)" in out
    # the same through the client's own walk from the top (certificates resolved the same way)
    code, out = idr("resolve", "88.100/bench-0", "--root", s, "--verify", "--trust-root", f"{rsa}.pub")
    assert code == 0 and "every public value is signed" in out, out
    # with another root, or none
    code, out = idr("resolve", "88.100/bench-0", "--server", s, "--verify", "--trust-root", f"{dsa}.pub")
    assert code == 1 and "the chain ends at 301:0.NA/88.100, whose key is not a trusted root" in out
    code, out = idr("resolve", "88.100/bench-0", "--server", s, "--verify")
    assert code == 1 and "--verify needs the keys you trust" in out
    # a value changed after signing: named by index and type, exit code 1
    code, out = idr(
        "modify", "88.100/bench-0", "--value", "1:URL:https://evil.example/", "--server", s, *AUTH
    )
    assert code == 0, out
    code, out = idr("resolve", "88.100/bench-0", "--server", s, "--verify", "--trust-root", f"{rsa}.pub")
    assert code == 1
    assert (
        "TAMPERED: value 1 (URL) does not match signature 400 by 302:0.NA/88.100: changed after signing"
        in out
    )
    assert "UNSIGNED: values 1 (URL)" in out
    # re-signing covers the new value
    code, out = idr("sign", "88.100/bench-0", "--auth", "302:0.NA/88.100", "--key", str(dsa),
                    "--chain", "500:0.NA/88.100", "--chain", "501:0.NA/88.100", "--server", s)  # fmt: skip
    assert code == 0 and "at index 400" in out
    code, out = idr(
        "resolve", "88.100/bench-0", "--server", s, "--verify", "--trust-root", f"{rsa}.pub", "-t", "URL"
    )
    assert code == 0 and "https://evil.example/" in out


def test_a_record_without_signatures_and_bad_input(native_thread: NativeThread, tmp_path: Path) -> None:  # noqa: F811
    s = native_thread.address
    rsa = tmp_path / "rsa.pem"
    write_key_pair(key("rsa"), rsa)
    code, out = idr("resolve", "88.100/bench-1", "--server", s, "--verify", "--trust-root", f"{rsa}.pub")
    assert code == 1 and "carries no HS_SIGNATURE" in out
    code, out = idr(
        "cert",
        "301:0.NA/88.100",
        "--subject-key",
        f"{rsa}.pub",
        "--perm",
        "sometimes",
        "--issuer-key",
        str(rsa),
    )
    assert code == 1 and "the permission is one of everything" in out
    code, out = idr("cert", "301:0.NA/88.100", "--subject-key", f"{rsa}.pub", "--perm", "thisHandle",
                    "--issuer-key", str(rsa))  # fmt: skip
    assert code == 1 and "needs the prefix handle" in out
    code, out = idr(
        "sign", "88.100/nothing-here", "--auth", "301:0.NA/88.100", "--key", str(rsa), "--server", s
    )
    assert code == 1 and "no record" in out
    code, out = idr(
        "resolve", "88.100/bench-1", "--server", s, "--verify", "--trust-root", str(tmp_path / "nope")
    )
    assert code == 1 and "cannot read key file" in out
